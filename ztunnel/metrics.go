package ztunnel

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/policy"
)

// metrics are the node's Prometheus series, on the node's own registry.
type metrics struct {
	connOpened        *prometheus.CounterVec // direction, protocol
	connClosed        *prometheus.CounterVec // direction, protocol, result
	bytes             *prometheus.CounterVec // direction, protocol, flow (sent|received)
	connRejected      *prometheus.CounterVec // direction, reason
	handshakeFailures *prometheus.CounterVec // reason
	panics            prometheus.Counter
	policyDecisions   *prometheus.CounterVec // decision, policy, reason
	policyClosed      *prometheus.CounterVec // policy, reason
	pods              *prometheus.GaugeVec   // state
	podStates         func() map[string]int
}

func newMetrics(reg prometheus.Registerer, podStates func() map[string]int) *metrics {
	m := &metrics{
		connOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_opened_total", Help: "Proxied connections opened.",
		}, []string{"direction", "protocol"}),
		connClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_closed_total", Help: "Proxied connections closed, by result (ok|error).",
		}, []string{"direction", "protocol", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_bytes_total", Help: "Bytes proxied; flow is sent (by the connection's opener) or received.",
		}, []string{"direction", "protocol", "flow"}),
		connRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_connections_rejected_total", Help: "Connections refused before proxying.",
		}, []string{"direction", "reason"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_handshake_failures_total", Help: "Failed inbound mTLS handshakes, by reason.",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ztunnel_handler_panics_total", Help: "Panics recovered in connection handlers.",
		}),
		policyDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_policy_decisions_total",
			Help: "Authorization decisions on inbound connections when they open, by decision (allow|deny), reason and deciding policy (namespace/name; for no-allow-match the Allow policies, comma separated; else empty).",
		}, []string{"decision", "policy", "reason"}),
		policyClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztunnel_policy_closed_connections_total",
			Help: "Live inbound connections closed because a new config no longer allows them, by the new decision's policy (as in ztunnel_policy_decisions_total) and reason.",
		}, []string{"policy", "reason"}),
		pods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztunnel_pods", Help: "Pods handed over by agentd, by state.",
		}, []string{"state"}),
		podStates: podStates,
	}
	reg.MustRegister(m.connOpened, m.connClosed, m.bytes, m.connRejected, m.handshakeFailures, m.panics,
		m.policyDecisions, m.policyClosed, m.pods)
	return m
}

func (m *metrics) opened(direction, protocol string) {
	m.connOpened.WithLabelValues(direction, protocol).Inc()
}

func (m *metrics) closed(direction, protocol string, ok bool, sent, received int64) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.connClosed.WithLabelValues(direction, protocol, result).Inc()
	m.bytes.WithLabelValues(direction, protocol, "sent").Add(float64(sent))
	m.bytes.WithLabelValues(direction, protocol, "received").Add(float64(received))
}

// watchLimits exports what the limits have in use.
func (m *metrics) watchLimits(reg prometheus.Registerer, l *limits) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_sockets",
			Help: "Sockets held for proxied connections (accepted, dialed, HBONE connections): the fd budget in use.",
		}, func() float64 { return float64(l.fds.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_sockets_limit", Help: "The fd budget: sockets beyond it are refused (0: none).",
		}, func() float64 { return float64(l.fds.max.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_connections",
			Help: "Proxied connections carried now (outbound and plaintext connections, inbound HBONE streams).",
		}, func() float64 { return float64(l.conns.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_connections_limit", Help: "--max-connections (0: none).",
		}, func() float64 { return float64(l.conns.max.Load()) }),
	)
}

func (m *metrics) rejected(direction, reason string) {
	m.connRejected.WithLabelValues(direction, reason).Inc()
}

// refreshPods sets the pods gauge from the node's pod table.
func (m *metrics) refreshPods() {
	counts := m.podStates()
	for _, s := range []string{statePending, stateFailed, stateReady} {
		m.pods.WithLabelValues(s).Set(float64(counts[s]))
	}
}

// decided counts the decision on a connection being opened.
func (m *metrics) decided(d policy.Decision) {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	m.policyDecisions.WithLabelValues(verdict, d.Policy, string(d.Reason)).Inc()
}

// policyClosedConn counts a live connection closed by a config change; d is
// the new decision.
func (m *metrics) policyClosedConn(d policy.Decision) {
	m.policyClosed.WithLabelValues(d.Policy, string(d.Reason)).Inc()
}
