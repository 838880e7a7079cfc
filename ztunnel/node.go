package ztunnel

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/pipeline"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/resolve"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// CertManager is the part of *identity.Manager the node uses.
type CertManager interface {
	Ensure(ctx context.Context, id spiffe.ID) error
	Forget(id spiffe.ID)
	ServerTLSConfig(local spiffe.ID, authorize func(peer spiffe.ID, cs tls.ConnectionState) error) *tls.Config
	ClientTLSConfig(local, expectedPeer spiffe.ID) *tls.Config
	Snapshot() []identity.CertInfo
}

// NodeAddrs says which addresses are the node's own (a *nodeaddr.Set):
// plaintext from one of them to a workload's probe port is the kubelet
// probing it.
type NodeAddrs = authorize.NodeAddrs

// NodeOptions configure a Node.
type NodeOptions struct {
	// NodeName is the node's name; /debug/authz uses it to refuse
	// workloads of other nodes (unchecked when empty).
	NodeName  string
	Logger    *slog.Logger
	Certs     CertManager
	OrigDst   classify.OrigDst
	Listeners ListenerTable
	// NodeAddrs are the node's addresses; nil: none (no connection is
	// taken for the kubelet's).
	NodeAddrs NodeAddrs
	// Registry receives the node's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// DialTimeout bounds each upstream TCP connect (default 10s); an
	// outbound flow's upstream as a whole gets twice it and 5 s more
	// (transport.Transport.Dial).
	DialTimeout time.Duration
	// HandshakeTimeout bounds inbound TLS handshakes (default 10s).
	HandshakeTimeout time.Duration
	// PodNet opens the network namespaces agentd hands over (default: the
	// real ones, podnet.Netns).
	PodNet podnet.Opener
	// MaxConnections bounds the proxied connections (outbound and
	// plaintext connections, inbound HBONE streams) carried at once; 0
	// leaves only the fd budget (see limits).
	MaxConnections int
	// Failover bounds the retries of connections to Services on other
	// endpoints (zero: transport.DefaultFailover).
	Failover transport.Failover
	// DNSUpstreams tells the pods' DNS proxies where each captured query
	// was going (the pinned dns_upstream map); nil runs no DNS proxy.
	DNSUpstreams dnsproxy.Upstreams
	// ClusterDomain is the Services' DNS domain ("" = cluster.local).
	ClusterDomain string
	// SameNodeFastPath joins connections between two pods of this node
	// inside the tunnel, without TLS and HTTP/2 (pipeline.Local); off,
	// they go over HBONE to the node's own listener like any other.
	SameNodeFastPath bool
	// Detect configures the application protocol decision of outbound
	// flows (package detect); the zero value sniffs nothing (declared
	// protocols are still recorded).
	Detect detect.Options
	// HTTPPerRequest proxies outbound HTTP flows (HTTP/1.x, HTTP/2, gRPC,
	// A2A, MCP, as detect decided) request by request: each request is
	// balanced on its own over the Service's endpoints (package l7).
	HTTPPerRequest bool
	// Tracer, when set, makes a span per request the tunnel proxies per
	// request (source: client spans; destination: server spans).
	Tracer trace.TracerProvider
	// RecentRequests is how many of the last requests proxied per request
	// the node keeps for /debug/requests: 0 is
	// record.DefaultRecentRequests, a negative number none.
	RecentRequests int
}

// Node is the per-node tunnel: it owns the listeners inside every handed-over
// pod netns and proxies their connections. It implements handoff.Handler.
// All methods are safe for concurrent use; after Run returns, AddPod fails.
type Node struct {
	opts NodeOptions
	log  *slog.Logger
	idx  atomic.Pointer[meshconfig.Index]
	// changed is closed (and replaced) when a new config is swapped in.
	changed atomic.Pointer[chan struct{}]

	// The pipeline and its stages that outlive a connection.
	pipe      *pipeline.Pipeline
	rec       *record.Recorder
	auth      *authorize.Authorizer
	transport *transport.Transport
	balancer  *balance.Balancer
	server    *hbone.Server
	limits    *limits.Limits
	gauges    *gauges
	dns       *dnsproxy.Proxy // nil without NodeOptions.DNSUpstreams
	trim      limits.Trimmer  // used by Run only

	// ctx is the parent of every pod context; cancelled when Run ends.
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // wakes the reconcile loop; capacity 1

	// opMu serialises pod lifecycle operations (add, remove, snapshot,
	// reconcile, shutdown). It may be held across slow calls.
	opMu sync.Mutex
	// closed is set under opMu when the node shuts down.
	closed bool
	// draining makes Ready fail from the start of shutdown.
	draining atomic.Bool

	// handedOver is set once agentd gave the pods to a successor ztunnel
	// (drainingNode.HandOver): Ready fails and AddPod refuses from then on.
	handedOver atomic.Bool

	mu           sync.Mutex // guards pods, handed and snapshotDone
	pods         map[string]*pod
	handed       []*pod // pods handed over, draining until released
	snapshotDone bool
}

// NewNode returns a node; call Run to start its reconcile loop.
func NewNode(o NodeOptions) *Node {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.PodNet == nil {
		o.PodNet = podnet.Netns{Log: o.Logger}
	}
	if o.RecentRequests == 0 {
		o.RecentRequests = record.DefaultRecentRequests
	}
	n := &Node{
		opts: o,
		log:  o.Logger,
		kick: make(chan struct{}, 1),
		pods: map[string]*pod{},
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.idx.Store(meshconfig.NewIndex(&meshconfig.Config{}))
	ch := make(chan struct{})
	n.changed.Store(&ch)
	lim, err := limits.New(o.MaxConnections, o.Logger)
	if err != nil {
		o.Logger.Error("no fd budget: connections are limited by --max-connections only", "err", err)
	}
	n.limits = lim
	n.rec = record.New(o.Logger, o.Registry, max(o.RecentRequests, 0))
	n.gauges = newGauges(o.Registry, n.podStates, lim)
	n.auth = authorize.New(n.Index, o.NodeAddrs, n.rec, o.Logger)
	client := hbone.NewClient(hbone.ClientOptions{Logger: o.Logger.With("component", "hbone-client"), IdleTimeout: 90 * time.Second})
	n.balancer = balance.New()
	topts := transport.Options{
		HBONE: client, Certs: o.Certs, Limits: lim, Record: n.rec, DialTimeout: o.DialTimeout,
		Balancer: n.balancer, Failover: o.Failover,
	}
	if o.SameNodeFastPath {
		topts.Local = n.dialLocal
	}
	n.transport = transport.New(topts)
	n.server = hbone.NewServer(hbone.ServerOptions{Logger: o.Logger.With("component", "hbone-server")})
	if o.DNSUpstreams != nil {
		n.dns = dnsproxy.New(dnsproxy.Options{Logger: o.Logger.With("component", "dns"), Index: n.Index,
			Upstreams: o.DNSUpstreams, ClusterDomain: o.ClusterDomain, Registry: o.Registry})
	}
	n.pipe = &pipeline.Pipeline{
		Log: o.Logger, Index: n.Index, ConfigChanged: n.configChanged, OrigDst: o.OrigDst, Resolve: resolve.New(n.Index), Authorize: n.auth,
		Transport: n.transport, Limits: lim, Record: n.rec, HBONEServer: n.server, ServerTLS: o.Certs,
		HandshakeTimeout: o.HandshakeTimeout, Detect: detect.New(o.Detect), HTTP: o.HTTPPerRequest, Tracer: o.Tracer,
	}
	return n
}

// SetConfig swaps in a new mesh config, closes the live inbound connections
// its authorization data no longer allows and sets up pods that waited for
// it.
func (n *Node) SetConfig(c *meshconfig.Config) {
	idx := meshconfig.NewIndex(c)
	n.idx.Store(idx)
	next := make(chan struct{})
	close(*n.changed.Swap(&next))
	n.log.Info("mesh config applied", "workloads", len(c.Workloads), "services", len(c.Services), "trust_domain", c.TrustDomain)
	n.balancer.Prune(func(service, endpoint string) bool { return hasEndpoint(idx, service, endpoint) })
	n.auth.Reevaluate(n.liveSets())
	n.wake()
}

// hasEndpoint reports whether service (namespace/name) of idx still has
// the endpoint keyed endpoint (a pod uid or an address).
func hasEndpoint(idx *meshconfig.Index, service, endpoint string) bool {
	ns, name, _ := strings.Cut(service, "/")
	s := idx.Service(ns, name)
	if s == nil {
		return false
	}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if e.WorkloadUID == endpoint {
			return true
		}
		for _, ip := range e.IPs {
			if ip.String() == endpoint {
				return true
			}
		}
	}
	return false
}

// liveSets are the admitted connections of the handed-over pods; pods being
// drained are not among them: their connections run to their end.
func (n *Node) liveSets() []*authorize.Live {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*authorize.Live, 0, len(n.pods)+len(n.handed))
	for _, p := range n.pods {
		out = append(out, &p.live)
	}
	// A handed-over pod's connections still run here: a policy change
	// closes those it no longer allows as for any pod.
	for _, p := range n.handed {
		out = append(out, &p.live)
	}
	return out
}

// configChanged returns a channel closed when the config in force is
// replaced.
func (n *Node) configChanged() <-chan struct{} { return *n.changed.Load() }

// Index returns the current config index.
func (n *Node) Index() *meshconfig.Index { return n.idx.Load() }

func (n *Node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run retries pods that are not set up (config not there yet, certificate
// failed) until ctx is done, then tears every pod down. Shutdown order:
//  1. refuse new pods (closed), so handoff can no longer add any;
//  2. per pod: delete its SOCKHASH entries first (new connections are then
//     refused by the kernel: the mesh fails closed), close its listeners
//     (accept loops end), cancel its context (live conns are closed), wait
//     for its goroutines (bounded), close its netns fd;
//  3. close the HBONE client (pooled conns) and server.
func (n *Node) Run(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return n.shutdown()
		case <-n.kick:
		case now := <-t.C:
			n.limits.Refused.Flush(now)
			if n.trim.Due(n.limits.Conns.Used.Load()) {
				limits.TrimMemory(n.log)
			}
		}
		n.reconcile()
	}
}

func (n *Node) shutdown() error {
	n.draining.Store(true)
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.closed = true
	n.mu.Lock()
	pods := n.pods
	n.pods = map[string]*pod{}
	n.mu.Unlock()
	var err error
	for _, p := range pods {
		if e := n.teardownLocked(p); e != nil && err == nil {
			err = e
		}
	}
	n.cancel()
	n.transport.Close()
	n.server.Close()
	return err
}
