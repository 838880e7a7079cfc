// Package record is the last stage of ztunnel's pipeline: one access log
// line and the metrics of every flow, whatever its path (HBONE, plaintext,
// passthrough), and the counters of what happens on the way (refusals,
// handshake failures, policy decisions, panics). It also keeps the last
// requests proxied per request in a fixed-size ring for the admin API
// (Recorder.Recent).
package record

import (
	"cmp"
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// Recorder writes access lines to its logger, counts on its metrics and
// keeps the last requests proxied per request (Recent). Safe for
// concurrent use.
type Recorder struct {
	log    *slog.Logger
	M      *Metrics
	tools  toolNames
	recent *ring // nil: no requests kept
}

// New registers the metrics on reg; the recorder keeps the last recent
// requests (0: none).
func New(log *slog.Logger, reg prometheus.Registerer, recent int) *Recorder {
	return &Recorder{log: log, M: newMetrics(reg), recent: newRing(recent)}
}

// Opened counts a flow that starts being proxied.
func (r *Recorder) Opened(f *flow.Flow) {
	r.M.Opened.WithLabelValues(string(f.Direction), string(f.Protocol)).Inc()
}

// Rejected counts a connection refused before proxying (a limit).
func (r *Recorder) Rejected(d flow.Direction, reason string) {
	r.M.Rejected.WithLabelValues(string(d), reason).Inc()
}

// HandshakeFailed counts a failed inbound mTLS handshake.
func (r *Recorder) HandshakeFailed(reason string) {
	r.M.HandshakeFailures.WithLabelValues(reason).Inc()
}

// Panicked counts a panic recovered in a connection handler.
func (r *Recorder) Panicked() { r.M.Panics.Inc() }

// Decided counts the policy decision on a connection being opened.
func (r *Recorder) Decided(d policy.Decision) {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	r.M.PolicyDecisions.WithLabelValues(verdict, d.Policy, string(d.Reason)).Inc()
}

// PolicyClosed counts a live connection closed by a config change; d is
// the new decision.
func (r *Recorder) PolicyClosed(d policy.Decision) {
	r.M.PolicyClosed.WithLabelValues(d.Policy, string(d.Reason)).Inc()
}

// ServiceConnect counts a connection to a Service VIP by result.
func (r *Recorder) ServiceConnect(service, result string) {
	r.M.ServiceConns.WithLabelValues(service, result).Inc()
}

// ServiceRetry counts a failover of a connection to service.
func (r *Recorder) ServiceRetry(service, reason string) {
	r.M.ServiceRetries.WithLabelValues(service, reason).Inc()
}

// Connected counts f, which is now connected end to end (its upstream is
// up), in agentmesh_tcp_connections_opened_total; Access then counts it
// closed with its bytes under the same labels.
func (r *Recorder) Connected(f *flow.Flow) {
	f.TCPLabels = tcpLabels(f)
	r.M.TCPOpened.WithLabelValues(f.TCPLabels...).Inc()
}

// tcpLabels are f's values of TCPLabelNames.
func tcpLabels(f *flow.Flow) []string {
	reporter := "source"
	if f.Direction == flow.Inbound {
		reporter = "destination"
	}
	service := "unknown"
	if f.Service != nil {
		service = f.Service.Key()
	}
	security := "none"
	switch {
	case f.MTLS:
		security = "mutual_tls"
	case f.Protocol == flow.Local:
		security = "local"
	}
	sw, sn := workloadLabels(f.SrcWorkload)
	dw, dn := workloadLabels(f.DstWorkload)
	return []string{reporter, sw, sn, dw, dn, service, security}
}

// workloadLabels are w's workload name (its pod's when the config has
// none, as in standalone mode) and namespace, "unknown" for nil.
func workloadLabels(w *meshconfig.Workload) (name, namespace string) {
	if w == nil {
		return "unknown", "unknown"
	}
	return cmp.Or(w.WorkloadName, w.Name, "unknown"), cmp.Or(w.Namespace, "unknown")
}

// Detected counts an outbound flow's application protocol decision.
func (r *Recorder) Detected(f *flow.Flow) {
	r.M.Detected.WithLabelValues(f.AppProtocol, f.Detected).Inc()
}

// Suspicious counts a plaintext connection stripped of the workload its
// address belongs to.
func (r *Recorder) Suspicious(reason string) { r.M.Suspicious.WithLabelValues(reason).Inc() }

// Access writes f's access log line ("msg":"access") and counts it closed.
func (r *Recorder) Access(f *flow.Flow) {
	result := "ok"
	if f.Err != nil {
		result = f.Err.Error()
	}
	attrs := append(flowAttrs(f, 16),
		slog.Int64("bytes_sent", f.Sent),
		slog.Int64("bytes_received", f.Received),
		slog.Int64("duration_ms", time.Since(f.Start).Milliseconds()),
		slog.String("result", result),
	)
	if f.AppProtocol != "" {
		attrs = append(attrs, slog.String("app_protocol", f.AppProtocol), slog.String("app_protocol_by", f.Detected))
	}
	if f.Service != nil {
		attrs = append(attrs, slog.String("upstream_addr", addrString(f.Upstream)), slog.Int("attempts", f.Attempts))
	}
	if f.Requests > 0 {
		attrs = append(attrs, slog.Int("requests", f.Requests))
	}
	if f.Authz != nil {
		attrs = append(attrs, slog.String("authz", string(f.Authz.Reason)), slog.String("policy", f.Authz.Policy))
	}
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
	ok := "ok"
	if f.Err != nil {
		ok = "error"
	}
	// Bytes before the closed counts: whoever sees a connection closed
	// (a scrape, a test waiting for it) sees all of its bytes too.
	if f.TCPLabels != nil {
		r.M.TCPReceived.WithLabelValues(f.TCPLabels...).Add(float64(f.Sent))
		r.M.TCPSent.WithLabelValues(f.TCPLabels...).Add(float64(f.Received))
		r.M.TCPClosed.WithLabelValues(f.TCPLabels...).Inc()
	}
	d, p := string(f.Direction), string(f.Protocol)
	r.M.Bytes.WithLabelValues(d, p, "sent").Add(float64(f.Sent))
	r.M.Bytes.WithLabelValues(d, p, "received").Add(float64(f.Received))
	r.M.Closed.WithLabelValues(d, p, ok).Inc()
}

// flowAttrs are the attributes every line about flow f begins with: its
// direction and path, both ends' addresses, workloads and identities, the
// Service and whether mTLS carried it; room is the capacity for more.
func flowAttrs(f *flow.Flow, room int) []slog.Attr {
	return append(make([]slog.Attr, 0, room),
		slog.String("direction", string(f.Direction)),
		slog.String("protocol", string(f.Protocol)),
		slog.String("src_addr", f.Src.String()),
		slog.String("dst_addr", f.Dst.String()),
		slog.String("src_workload", WorkloadName(f.SrcWorkload)),
		slog.String("src_identity", IDString(f.SrcID)),
		slog.String("dst_workload", WorkloadName(f.DstWorkload)),
		slog.String("dst_service", ServiceName(f)),
		slog.String("dst_identity", IDString(f.DstID)),
		slog.Bool("mtls", f.MTLS),
	)
}

// ServiceName is the namespace/name of the Service f was addressed to, ""
// when none.
func ServiceName(f *flow.Flow) string {
	if f.Service == nil {
		return ""
	}
	return f.Service.Key()
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// WorkloadName is w's namespace/name, "" for nil.
func WorkloadName(w *meshconfig.Workload) string {
	if w == nil {
		return ""
	}
	return w.Namespace + "/" + w.Name
}

// IDString is id as text, "" for the zero id.
func IDString(id spiffe.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// TrafficEvent counts one event of service's routes or TrafficPolicy
// (agentmesh_traffic_events_total).
func (r *Recorder) TrafficEvent(service, event string) {
	r.M.Traffic.WithLabelValues(service, event).Inc()
}
