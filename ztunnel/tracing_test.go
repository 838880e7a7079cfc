package ztunnel

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/api/policy"
)

// TestTracing: a request the app sends with its own traceparent gets a
// client span in the source tunnel (child of the app's span) and a server
// span in the destination tunnel (child of the client span), and the
// destination app gets a traceparent naming the server span; MCP calls
// carry mcp.method.name and gen_ai.tool.name; the request lines name the
// trace.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	t.Cleanup(func() { tp.Shutdown(t.Context()) })
	e := newHTTPEnvWith(t, "http", func(o *NodeOptions) { o.Tracer = tp }, "uid-b")
	// A rule with L7 parts makes b's tunnel serve the requests.
	c := e.config(target(policy.MTLSPermissive, agentPolicy("all", policy.ActionAllow, l7Rule(&policy.HTTPMatch{}, nil, nil))))
	c.Workloads = append(c.Workloads, e.node.Index().Config.Workloads[2:]...)
	c.Services = e.node.Index().Config.Services
	e.node.SetConfig(c)
	client, _ := e.client(false)

	const appTrace, appSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodGet, "http://web/headers", nil)
	req.Header.Set("Traceparent", "00-"+appTrace+"-"+appSpan+"-01")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got http.Header
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	waitFor(t, "two spans", func() bool { return len(exp.GetSpans()) == 2 })
	var clientSpan, serverSpan tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		switch s.SpanKind {
		case trace.SpanKindClient:
			clientSpan = s
		case trace.SpanKindServer:
			serverSpan = s
		}
	}
	if clientSpan.SpanContext.TraceID().String() != appTrace || clientSpan.Parent.SpanID().String() != appSpan {
		t.Errorf("client span %s parent %s, want trace %s under the app's span %s", clientSpan.SpanContext.TraceID(), clientSpan.Parent.SpanID(), appTrace, appSpan)
	}
	if serverSpan.SpanContext.TraceID().String() != appTrace || serverSpan.Parent.SpanID() != clientSpan.SpanContext.SpanID() {
		t.Errorf("server span parent %s, want the client span %s", serverSpan.Parent.SpanID(), clientSpan.SpanContext.SpanID())
	}
	if tp := got.Get("Traceparent"); !strings.Contains(tp, appTrace+"-"+serverSpan.SpanContext.SpanID().String()) {
		t.Errorf("the app got traceparent %q, want the server span %s as parent", tp, serverSpan.SpanContext.SpanID())
	}
	e.logs.wait(t, map[string]any{"msg": "request", "direction": "outbound", "trace_id": appTrace, "span_id": clientSpan.SpanContext.SpanID().String()})
	e.logs.wait(t, map[string]any{"msg": "request", "direction": "inbound", "trace_id": appTrace, "span_id": serverSpan.SpanContext.SpanID().String()})

	// An MCP call: its spans are named by method and tool.
	exp.Reset()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`
	req, _ = http.NewRequest(http.MethodPost, "http://web/mcp", strings.NewReader(body))
	req.Header.Set("Traceparent", "00-"+appTrace+"-"+appSpan+"-01")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "search")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "two spans", func() bool { return len(exp.GetSpans()) == 2 })
	for _, s := range exp.GetSpans() {
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.String()
		}
		if s.Name != "tools/call search" || attrs["mcp.method.name"] != "tools/call" || attrs["gen_ai.tool.name"] != "search" {
			t.Errorf("%s span %q attributes %v, want tools/call search", s.SpanKind, s.Name, attrs)
		}
	}

	// A request without traceparent is not sampled here (the caller's
	// decision, and 0 for traces the tunnel starts): no span, no ids.
	exp.Reset()
	httpGet(t, client, "http://web/")
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans for an unsampled request", n)
	}
}
