// Package dnsproxy is ztunnel's DNS proxy: one Server per enrolled pod,
// on one dual-stack socket at port 15053 inside the pod's network
// namespace (answering only the pod itself), reached at 127.0.0.1:15053
// and [::1]:15053, where the DNS capture (bpf/dns.c) sends the pod's UDP
// queries to port 53. It answers A and AAAA questions for the mesh's
// Services (svc, svc.ns, svc.ns.svc, svc.ns.svc.<cluster domain>, the pod
// namespace's search path) from the config in force, and forwards every
// other query to the upstream resolver the app addressed, from inside the
// pod's netns. See docs/dns.md.
package dnsproxy

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Net makes the proxy's sockets inside one pod's network namespace
// (podnet's real Net does). Methods are safe for concurrent use.
type Net interface {
	// ListenUDP opens a UDP socket at addr inside the namespace.
	ListenUDP(network, addr string) (*net.UDPConn, error)
	// DialUDP makes a UDP socket inside the namespace, marked so the
	// capture lets it through, connected to addr.
	DialUDP(addr netip.AddrPort) (*net.UDPConn, error)
}

// Upstreams says which upstream resolver the query from client (its
// source address at the proxy) in the netns with the given cookie was
// addressed to: bpf.LookupDNSUpstream on the pinned dns_upstream map.
type Upstreams interface {
	LookupDNSUpstream(netnsCookie uint64, client netip.AddrPort) (netip.AddrPort, error)
}

// Defaults of Options.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultTimeout       = 5 * time.Second
	DefaultMaxForwards   = 64
)

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger // nil = discard
	// Index is the mesh config in force (read on every query).
	Index     func() *meshconfig.Index
	Upstreams Upstreams
	// ClusterDomain is the Services' domain ("" = cluster.local).
	ClusterDomain string
	// Registry receives ztunnel_dns_queries_total.
	Registry prometheus.Registerer
	// Timeout bounds one forwarded query (0 = DefaultTimeout).
	Timeout time.Duration
	// MaxForwards bounds the forwarded queries in flight per pod; more are
	// dropped (0 = DefaultMaxForwards). One pod's flood cannot take
	// another's.
	MaxForwards int
}

// Proxy holds what every pod's Server shares: the config, the metrics.
type Proxy struct {
	opts    Options
	domain  string
	metrics *metrics
}

// New returns a Proxy; Start serves a pod.
func New(o Options) *Proxy {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxForwards == 0 {
		o.MaxForwards = DefaultMaxForwards
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return &Proxy{opts: o, domain: NormalizeDomain(o.ClusterDomain), metrics: newMetrics(o.Registry)}
}
