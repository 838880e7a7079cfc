package dnsproxy

import "github.com/prometheus/client_golang/prometheus"

// Outcomes of a query, the outcome label of ztunnel_dns_queries_total.
const (
	Answered      = "answered"       // a Service name, answered from the mesh config
	NXDomain      = "nxdomain"       // a name of the cluster's Service tree that the mesh config says does not exist
	Forwarded     = "forwarded"      // sent to the upstream the app addressed; its reply relayed
	FormErr       = "formerr"        // malformed after a readable header: answered FORMERR
	Dropped       = "dropped"        // not a query (too short, a response), not from the pod, or the pod's forwards are full: no reply
	UpstreamError = "upstream_error" // the upstream is unknown, failed or timed out: answered SERVFAIL
)

var outcomes = []string{Answered, NXDomain, Forwarded, FormErr, Dropped, UpstreamError}

// metrics count the queries of every pod's proxy.
type metrics struct {
	queries *prometheus.CounterVec // outcome
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{queries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ztunnel_dns_queries_total",
		Help: "DNS queries the pods' DNS proxies took, by outcome (answered, forwarded, formerr, dropped, upstream_error).",
	}, []string{"outcome"})}
	for _, o := range outcomes {
		m.queries.WithLabelValues(o) // every series from the start
	}
	reg.MustRegister(m.queries)
	return m
}

func (m *metrics) count(outcome string) { m.queries.WithLabelValues(outcome).Inc() }
