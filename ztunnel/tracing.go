package ztunnel

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// tracing is the OTLP export of request spans (--otlp-endpoint).
type tracing struct {
	provider *sdktrace.TracerProvider
}

// newTracing exports spans by OTLP/gRPC (plaintext, the collector is in
// the cluster) to endpoint, sampling ratio of the traces this tunnel
// starts and following the caller's decision for the others. Spans are
// batched; a collector that is down loses spans, never requests.
func newTracing(ctx context.Context, endpoint string, ratio float64, node string, log *slog.Logger) (*tracing, error) {
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("agentmesh-ztunnel"), semconv.K8SNodeName(node)))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	p := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	log.Info("tracing requests", "otlp_endpoint", endpoint, "sampling", ratio)
	return &tracing{provider: p}, nil
}

// stop flushes the spans still queued, within ctx.
func (t *tracing) stop(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	return nil
}
