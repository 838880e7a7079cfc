package record

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the series of the proxied connections and their policy
// decisions, on the node's registry. Tests read them.
type Metrics struct {
	Opened            *prometheus.CounterVec // direction, protocol
	Closed            *prometheus.CounterVec // direction, protocol, result
	Bytes             *prometheus.CounterVec // direction, protocol, flow (sent|received)
	Rejected          *prometheus.CounterVec // direction, reason
	HandshakeFailures *prometheus.CounterVec // reason
	Panics            prometheus.Counter
	PolicyDecisions   *prometheus.CounterVec // decision, policy, reason
	PolicyClosed      *prometheus.CounterVec // policy, reason
	ServiceConns      *prometheus.CounterVec // service, result
	ServiceRetries    *prometheus.CounterVec // service, reason
	Suspicious        *prometheus.CounterVec // reason
	Detected          *prometheus.CounterVec // protocol, by
	// Per workload (TCPLabelNames): connections that connected, closed,
	// and their bytes.
	TCPOpened, TCPClosed, TCPReceived, TCPSent *prometheus.CounterVec
	// Per request (RequestLabelNames): HTTP requests proxied per request
	// (package l7) and their duration to the response's end.
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	// Traffic counts what a Service's routes and TrafficPolicy did
	// (TrafficEvents), by service.
	Traffic *prometheus.CounterVec // service, event
}

// Traffic events, the event label of agentmesh_traffic_events_total.
const (
	EventRetry           = "retry"                  // a request tried again (a route's retry codes, or not delivered)
	EventBudgetExhausted = "retry_budget_exhausted" // a retry the budget refused
	EventEjection        = "ejection"               // an endpoint ejected by outlier detection
	EventRateLimited     = "rate_limited"           // a request refused with 429 (destination)
	// A breaker's overflow is counted as its Agentmesh-Error reason
	// (overflow_max_requests, ...).
)

// RequestLabelNames label agentmesh_requests_total and
// agentmesh_request_duration_seconds: the workload labels of
// TCPLabelNames, response_code (the status the app got, 0 when none
// went out), protocol (http1, http2, grpc, a2a, mcp) and the agent
// protocol's method and tool where known (a2a_method, mcp_method,
// mcp_tool; "" for other requests, "other" past the known set).
var RequestLabelNames = []string{"reporter", "source_workload", "source_namespace", "destination_workload", "destination_namespace", "destination_service", "response_code", "protocol", "a2a_method", "mcp_method", "mcp_tool"}

// RequestBuckets are agentmesh_request_duration_seconds' bucket bounds:
// from a quick tool call to a long model response (10 minutes).
var RequestBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// TCPLabelNames label the agentmesh_tcp_* metrics. reporter is source
// (the caller's node, outbound) or destination (the callee's node,
// inbound); workloads are what runs the pods (their Deployment and so
// on, meshconfig.Workload.WorkloadName); destination_service is the
// Service the caller addressed (known to the source only); security is
// mutual_tls, local (the same-node fast path) or none. Unknown values are
// "unknown": every value comes from the mesh config, so the series are
// bounded by the workloads and services there are.
var TCPLabelNames = []string{"reporter", "source_workload", "source_namespace", "destination_workload", "destination_namespace", "destination_service", "security"}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_opened_total", Help: "Proxied connections opened.",
		}, []string{"direction", "protocol"}),
		Closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_closed_total", Help: "Proxied connections closed, by result (ok|error).",
		}, []string{"direction", "protocol", "result"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_bytes_total", Help: "Bytes proxied; flow is sent (by the connection's opener) or received.",
		}, []string{"direction", "protocol", "flow"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_rejected_total", Help: "Connections refused before proxying.",
		}, []string{"direction", "reason"}),
		HandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_handshake_failures_total", Help: "Failed inbound mTLS handshakes, by reason.",
		}, []string{"reason"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ztunnel_handler_panics_total", Help: "Panics recovered in connection handlers.",
		}),
		PolicyDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_policy_decisions_total",
			Help: "Authorization decisions on inbound connections when they open, by decision (allow|deny), reason and deciding policy (namespace/name; for no-allow-match the Allow policies, comma separated; else empty).",
		}, []string{"decision", "policy", "reason"}),
		PolicyClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_policy_closed_connections_total",
			Help: "Live inbound connections closed because a new config no longer allows them, by the new decision's policy (as in ztunnel_policy_decisions_total) and reason.",
		}, []string{"policy", "reason"}),
		ServiceConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_service_connections_total",
			Help: "Outbound connections to a Service VIP, by service (namespace/name) and result: ok (an endpoint connected), error (every attempt failed), no_endpoint (none ready: refused at once), no_port (the Service has no such port).",
		}, []string{"service", "result"}),
		ServiceRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_service_connect_retries_total",
			Help: "Failovers: connects to a Service endpoint that failed and were tried again on another, by service and the failure (refused, timeout, unreachable, status_<code>, error).",
		}, []string{"service", "reason"}),
		Detected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_protocol_detected_total",
			Help: "Outbound connections by the application protocol decided (tcp, http1, http2, grpc, a2a, mcp) and how: declared (appProtocol or agentmesh.io/app-protocols), sniffed, timeout (the client sent nothing in time), inconclusive, opaque_port, not_sniffed (outside the mesh, or sniffing off).",
		}, []string{"protocol", "by"}),
		TCPOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_tcp_connections_opened_total", Help: "Connections proxied once connected end to end, by workload (see the labels).",
		}, TCPLabelNames),
		TCPClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_tcp_connections_closed_total", Help: "Connections counted in agentmesh_tcp_connections_opened_total that ended.",
		}, TCPLabelNames),
		TCPReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_tcp_received_bytes_total", Help: "Bytes the caller sent (the request direction) on connections that ended.",
		}, TCPLabelNames),
		TCPSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_tcp_sent_bytes_total", Help: "Bytes sent back to the caller (the response direction) on connections that ended.",
		}, TCPLabelNames),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_requests_total", Help: "HTTP requests proxied per request, by workload, response code, protocol and agent method (see the labels).",
		}, RequestLabelNames),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agentmesh_request_duration_seconds", Help: "Time from a request's start to its response's end, as the reporter saw it.",
			Buckets: RequestBuckets,
		}, RequestLabelNames),
		Traffic: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentmesh_traffic_events_total",
			Help: "What routes and TrafficPolicies did, by service (namespace/name) and event: retry, retry_budget_exhausted, ejection, rate_limited, and breaker overflows (overflow_max_requests, overflow_max_pending_requests, overflow_max_requests_per_endpoint, overflow_max_connections).",
		}, []string{"service", "event"}),
		Suspicious: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_suspicious_connections_total",
			Help: "Inbound plaintext connections from the address of a pod in the mesh (which never sends plaintext to a mesh pod): given no workload identity, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Opened, m.Closed, m.Bytes, m.Rejected, m.HandshakeFailures, m.Panics,
		m.PolicyDecisions, m.PolicyClosed, m.ServiceConns, m.ServiceRetries, m.Suspicious, m.Detected,
		m.TCPOpened, m.TCPClosed, m.TCPReceived, m.TCPSent, m.Requests, m.RequestDuration, m.Traffic)
	return m
}
