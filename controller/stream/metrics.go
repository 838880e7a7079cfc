package stream

import "github.com/prometheus/client_golang/prometheus"

// metrics of the config streams.
type metrics struct {
	streams    *prometheus.GaugeVec     // component
	nodes      prometheus.Gauge         // nodes with at least one stream
	pushes     *prometheus.CounterVec   // component, kind (full|delta)
	pushBytes  *prometheus.CounterVec   // component, kind (full|delta)
	encoded    *prometheus.CounterVec   // kind (shared|node|delta)
	nacks      *prometheus.CounterVec   // component
	ackLatency *prometheus.HistogramVec // component
	acked      *prometheus.GaugeVec     // node, component
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentmesh_controller_config_streams",
			Help: "Open config streams by component."}, []string{"component"}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentmesh_controller_connected_nodes",
			Help: "Nodes with at least one open config stream."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentmesh_controller_config_pushes_total",
			Help: "Config versions sent, by component and kind (full or delta)."}, []string{"component", "kind"}),
		pushBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentmesh_controller_config_push_bytes_total",
			Help: "Encoded bytes of the config versions sent, by component and kind (full or delta)."}, []string{"component", "kind"}),
		encoded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentmesh_controller_config_encoded_messages_total",
			Help: "Config messages encoded, by kind: shared (full-view chunks shared by every node), node (a node's own chunk or a node-specific delta), delta (a delta shared by the nodes at the same place)."}, []string{"kind"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentmesh_controller_config_nacks_total",
			Help: "Config versions a node refused."}, []string{"component"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentmesh_controller_config_ack_seconds",
			Help:    "Time from sending a config version to its ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"component"}),
		acked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentmesh_controller_config_acked_version",
			Help: "Last config version acked, per node and component."}, []string{"node", "component"}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.nodes, m.pushes, m.pushBytes, m.encoded, m.nacks, m.ackLatency, m.acked)
	}
	return m
}
