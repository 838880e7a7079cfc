package ztunnel

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
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

	mu    sync.Mutex // guards state and err
	state string
	err   error
}

// podListener is one listening socket in a pod netns.
type podListener struct {
	*podnet.Listener
	// registered lists the SOCKHASH keys inserted for it.
	registered []netip.Addr
}

func (p *pod) setState(s string, err error) {
	p.mu.Lock()
	p.state, p.err = s, err
	p.mu.Unlock()
}

func (p *pod) getState() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.err
}

func (p *pod) name() string { return p.info.Namespace + "/" + p.info.Name }
