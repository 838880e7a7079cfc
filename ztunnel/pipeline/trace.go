package pipeline

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/l7"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// propagator carries W3C trace context (traceparent, tracestate) in the
// requests' headers.
var propagator = propagation.TraceContext{}

// traced wraps h, a per-request handler of flow f, with a span per
// request (kind: client in the source tunnel, server in the destination):
// a child of the app's (or the source tunnel's) traceparent when the
// request carries one, else a new trace; its context goes on in the
// request's headers, so the next hop's spans are its children. Without a
// tracer provider h is returned as it is.
func (pl *Pipeline) traced(h http.Handler, kind trace.SpanKind, f *flow.Flow) http.Handler {
	if pl.Tracer == nil {
		return h
	}
	tracer := pl.Tracer.Tracer("github.com/agentmesh/agentmesh/ztunnel")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, spanName(r), trace.WithSpanKind(kind), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("server.address", r.Host),
			attribute.String("network.protocol.name", "http"),
			attribute.String("agentmesh.app_protocol", f.AppProtocol),
			attribute.String("agentmesh.source.workload", record.WorkloadName(f.SrcWorkload)),
			attribute.String("agentmesh.source.identity", record.IDString(f.SrcID)),
			attribute.String("agentmesh.destination.service", record.ServiceName(f)),
		))
		defer span.End()
		if f.DstWorkload != nil { // known at the destination; the source picks per request
			span.SetAttributes(attribute.String("agentmesh.destination.workload", record.WorkloadName(f.DstWorkload)))
		}
		if m := r.Header.Get("Mcp-Method"); m != "" {
			span.SetAttributes(attribute.String("mcp.method.name", m))
			if n := r.Header.Get("Mcp-Name"); n != "" && m == "tools/call" {
				span.SetAttributes(attribute.String("gen_ai.tool.name", n))
			}
		}
		propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
		sw := &l7.StatusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.Status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 || (kind == trace.SpanKindClient && status >= 400) {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	})
}

// spanName is the request's span name: the method (HTTP semantic
// conventions; paths are not low-cardinality), or the MCP method and
// tool when the client named them.
func spanName(r *http.Request) string {
	if m := r.Header.Get("Mcp-Method"); m != "" {
		if n := r.Header.Get("Mcp-Name"); n != "" && m == "tools/call" {
			return m + " " + n
		}
		return m
	}
	return r.Method
}

// annotateCall adds what the body said of an agent call to the request's
// span (the destination reads the body).
func annotateCall(ctx context.Context, q *record.Request, contextID string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if q.MCPMethod != "" {
		span.SetAttributes(attribute.String("mcp.method.name", q.MCPMethod))
		span.SetName(q.MCPMethod)
	}
	if q.MCPTool != "" {
		span.SetAttributes(attribute.String("gen_ai.tool.name", q.MCPTool))
		span.SetName(q.MCPMethod + " " + q.MCPTool)
	}
	if q.A2AMethod != "" {
		span.SetAttributes(attribute.String("rpc.method", q.A2AMethod), attribute.String("rpc.system", "jsonrpc"))
		span.SetName(q.A2AMethod)
	}
	if contextID != "" {
		span.SetAttributes(attribute.String("gen_ai.conversation.id", contextID))
	}
}

// traceIDs are the trace and span ids of ctx's span, "" when none.
func traceIDs(ctx context.Context) (string, string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}
