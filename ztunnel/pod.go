package ztunnel

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/pipeline"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// Pod states, as shown on /pods and in the ztunnel_pods metric.
const (
	statePending = "pending" // handed over, config does not know the uid yet
	stateFailed  = "failed"  // setup failed; retried by the reconcile loop
	stateReady   = "ready"   // listeners up and registered
)

// pod is one handed-over pod netns and everything ztunnel made in it.
type pod struct {
	info handoff.Pod
	net  podnet.Net // its netns; owned, closed on teardown

	// Set by setup (under Node.opMu) before state becomes ready; read-only
	// afterwards, so the conn goroutines read them without a lock. flow is
	// the pod as the pipeline sees it (its workload, identity, addresses).
	flow      flow.Pod
	listeners []*podListener
	dns       *dnsproxy.Server // nil: no DNS proxy (none configured, or a fake Net)
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // accept loops and conn goroutines

	active atomic.Int64   // live proxied connections
	live   authorize.Live // admitted inbound connections, for policy changes

	pendingLogged bool // guarded by Node.opMu
	// fd budget units held (limits.AdmitPod), under Node.opMu: the netns
	// handle's from AddPod to teardown, the listeners' and DNS sockets'
	// from setup until they are closed.
	netFDs, sockFDs int

	mu    sync.Mutex // guards state and err
	state string
	err   error
	// settled is closed when the pod first leaves the pending state (set
	// up or failed); a gated add waits for it.
	settled    chan struct{}
	settleOnce sync.Once
}

// podListener is one listening socket in a pod netns.
type podListener struct {
	*podnet.Listener
	// registered lists the SOCKHASH keys (pod ip, port) inserted for it.
	registered []netip.AddrPort
}

func (p *pod) setState(s string, err error) {
	p.mu.Lock()
	p.state, p.err = s, err
	p.mu.Unlock()
	if s != statePending && p.settled != nil {
		p.settleOnce.Do(func() { close(p.settled) })
	}
}

func (p *pod) getState() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.err
}

func (p *pod) name() string { return p.info.Namespace + "/" + p.info.Name }

// holdLocal returns the ready pod of this node that owns ip, if its
// identity is id, held until the returned release is called: teardown and
// drain wait for it like for the pod's own connections. Pods leave n.pods
// (under n.mu) before anything waits for their connections, so taking one
// here never races a wait.
func (n *Node) holdLocal(ip netip.Addr, id spiffe.ID) (*pod, func()) {
	ip = ip.Unmap()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pods {
		if st, _ := p.getState(); st != stateReady || !p.flow.Owns(ip) || p.flow.ID != id {
			continue
		}
		p.active.Add(1)
		p.wg.Add(1)
		return p, func() {
			p.active.Add(-1)
			p.wg.Done()
		}
	}
	return nil, nil
}

// dialLocal is the same-node fast path (transport.LocalDialer): a flow
// from pod src to a ready pod of this node with the expected identity is
// joined inside the tunnel (pipeline.Local); any other goes over HBONE.
func (n *Node) dialLocal(ctx context.Context, src *flow.Pod, f *flow.Flow, dst netip.AddrPort, sending func()) (net.Conn, bool, error) {
	p, release := n.holdLocal(dst.Addr(), f.DstID)
	if p == nil {
		return nil, false, nil
	}
	// Requests decided one by one need the HBONE stream's HTTP view:
	// such a connection goes to this node's own HBONE listener.
	// So do requests to a pod with rate limits (a TrafficPolicy's): the
	// destination side of that listener takes their tokens.
	if n.auth.NeedsRequests(p.info.UID, policy.Conn{MTLS: true, Identity: f.SrcID, Workload: src.UID,
		Addr: src.IPFor(dst.Addr()), Port: dst.Port()}) ||
		(f.PerRequest && len(n.Index().RateLimited(p.info.UID, dst.Port())) > 0) {
		release()
		return nil, false, nil
	}
	if sending != nil {
		sending()
	}
	c, err := n.pipe.Local(ctx, src, f, dst, pipeline.LocalDest{Pod: &p.flow, Live: &p.live, Ctx: p.ctx, Release: release})
	return c, true, err
}
