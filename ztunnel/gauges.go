package ztunnel

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/ztunnel/limits"
)

// gauges are the node's own series (the connections' are record's): its
// pods by state, and what the limits have in use.
type gauges struct {
	pods      *prometheus.GaugeVec // state
	podStates func() map[string]int
}

func newGauges(reg prometheus.Registerer, podStates func() map[string]int, l *limits.Limits) *gauges {
	g := &gauges{
		pods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztunnel_pods", Help: "Pods handed over by agentd, by state.",
		}, []string{"state"}),
		podStates: podStates,
	}
	reg.MustRegister(g.pods,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_sockets",
			Help: "The fd budget in use: sockets held for proxied connections (accepted, dialed, HBONE connections) and the pods' own (ztunnel_pod_sockets).",
		}, func() float64 { return float64(l.FDs.Used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_pod_sockets",
			Help: "Of the fd budget, what the pods hold themselves: netns handles, listeners, DNS sockets.",
		}, func() float64 { return float64(l.PodFDs.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_sockets_limit", Help: "The fd budget: sockets beyond it are refused (0: none).",
		}, func() float64 { return float64(l.FDs.Max.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_connections",
			Help: "Proxied connections carried now (outbound and plaintext connections, inbound HBONE streams).",
		}, func() float64 { return float64(l.Conns.Used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ztunnel_proxy_connections_limit", Help: "--max-connections (0: none).",
		}, func() float64 { return float64(l.Conns.Max.Load()) }),
	)
	return g
}

// refreshPods sets the pods gauge from the node's pod table.
func (g *gauges) refreshPods() {
	counts := g.podStates()
	for _, s := range []string{statePending, stateFailed, stateReady} {
		g.pods.WithLabelValues(s).Set(float64(counts[s]))
	}
}
