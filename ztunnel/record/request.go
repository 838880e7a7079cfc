package record

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// Request is one HTTP request proxied per request: f is its flow (the
// connection's, with the destination of the request's last try).
type Request struct {
	Method, Authority, Path string
	// Status is what the app got; Err, when set, why the tunnel answered
	// itself.
	Status   int
	Err      error
	Attempts int
	// ReqBytes and RespBytes are the body bytes each way.
	ReqBytes, RespBytes int64
	Duration            time.Duration
	// A2AMethod, MCPMethod and MCPTool name an agent call, when known.
	A2AMethod, MCPMethod, MCPTool string
	// TraceID and SpanID are the request's span in this tunnel, when
	// traced.
	TraceID, SpanID string
}

// Request writes q's line ("msg":"request"), counts it in
// agentmesh_requests_total and agentmesh_request_duration_seconds, and
// keeps it among the recent requests (Recent) as ended now.
func (r *Recorder) Request(f *flow.Flow, q Request) {
	if r.recent != nil {
		k := keptOf(f, &q, time.Now())
		r.recent.add(&k)
	}
	result := "ok"
	if q.Err != nil {
		result = q.Err.Error()
	}
	attrs := append(flowAttrs(f, 24),
		slog.String("app_protocol", f.AppProtocol),
		slog.String("method", q.Method),
		slog.String("authority", q.Authority),
		slog.String("path", q.Path),
		slog.Int("status", q.Status),
		slog.Int64("request_bytes", q.ReqBytes),
		slog.Int64("response_bytes", q.RespBytes),
		slog.Float64("duration_ms", float64(q.Duration.Microseconds())/1000),
		slog.String("result", result),
	)
	if f.Service != nil {
		attrs = append(attrs, slog.String("upstream_addr", addrString(f.Upstream)), slog.Int("attempts", q.Attempts))
	}
	for _, kv := range [][2]string{{"a2a_method", q.A2AMethod}, {"mcp_method", q.MCPMethod}, {"mcp_tool", q.MCPTool},
		{"trace_id", q.TraceID}, {"span_id", q.SpanID}} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)

	tcp := tcpLabels(f)
	labels := append(tcp[:6:6], strconv.Itoa(q.Status), f.AppProtocol,
		foldA2A(q.A2AMethod), foldMCP(q.MCPMethod), r.tools.fold(ServiceName(f), q.MCPTool))
	r.M.Requests.WithLabelValues(labels...).Inc()
	r.M.RequestDuration.WithLabelValues(labels...).Observe(q.Duration.Seconds())
}
