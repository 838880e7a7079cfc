package authorize

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// Conn is one inbound connection as policy sees it. Once admitted it is in
// its pod's Live set until it ends, and a config change that no longer
// allows it revokes it: every closer attached so far runs, and every
// closer attached later runs at once.
type Conn struct {
	Pod         *flow.Pod
	Live        *Live // the pod's admitted connections
	Policy      policy.Conn
	Src, Dst    netip.AddrPort
	SrcWorkload string // namespace/name of the source workload, "" if unknown
	// Requests is set by the caller when c can carry HTTP requests that
	// the tunnel can see and decide one by one (an HBONE stream).
	Requests bool

	l7     atomic.Bool // its requests are decided one by one (L7)
	opaque atomic.Bool // its bytes are not HTTP: decided as a whole

	mu      sync.Mutex
	closers []func()
	revoked *policy.Decision // guarded by mu
	ended   bool             // guarded by mu; a revocation then does nothing
}

// L7 reports whether c's requests are to be decided one by one (settled
// by Admit).
func (c *Conn) L7() bool { return c.l7.Load() }

// Attach registers close to run on revocation; false (after running close)
// when c is revoked already.
func (c *Conn) Attach(close func()) bool {
	c.mu.Lock()
	if c.revoked != nil {
		c.mu.Unlock()
		close()
		return false
	}
	c.closers = append(c.closers, close)
	c.mu.Unlock()
	return true
}

// End marks c as finished and takes it out of its Live set: a later
// revocation neither closes nor reports it.
func (c *Conn) End() {
	c.mu.Lock()
	c.ended = true
	c.closers = nil
	c.mu.Unlock()
	c.Live.remove(c)
}

// revoke records d and runs the closers; false if c was revoked before or
// has ended.
func (c *Conn) revoke(d policy.Decision) bool {
	c.mu.Lock()
	if c.revoked != nil || c.ended {
		c.mu.Unlock()
		return false
	}
	c.revoked = &d
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	for _, f := range closers {
		f()
	}
	return true
}

// Revocation is the decision that revoked c, nil if none did.
func (c *Conn) Revocation() *policy.Decision {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revoked
}

// RevokedErr is the *Error of a revoked c, else nil.
func (c *Conn) RevokedErr() error {
	if d := c.Revocation(); d != nil {
		return &Error{D: *d, Closed: true}
	}
	return nil
}

// Error is a connection refused by policy, or closed because a new config
// no longer allows it (Closed). It wraps hbone.ErrDenied, so an HBONE
// stream refused with it is answered 401 — except for want of policy
// data (the pod is leaving, or not set up yet): that is answered 503, the
// pod is unavailable rather than the caller unauthorized, and a client
// balancing a Service tries another endpoint.
type Error struct {
	D      policy.Decision
	Closed bool
}

func (e *Error) Error() string {
	if e.Closed {
		return "closed by policy change: " + e.D.String()
	}
	return "denied by policy: " + e.D.String()
}

func (e *Error) Unwrap() error {
	if e.D.Reason == policy.ReasonNoPolicyData {
		return ErrNoPolicyData
	}
	return hbone.ErrDenied
}

// ErrNoPolicyData is what an Error for want of policy data wraps.
var ErrNoPolicyData = errors.New("no policy data for the pod")

// Live is a pod's admitted inbound connections. The zero value is empty.
type Live struct {
	UID string // of the pod

	mu    sync.Mutex
	conns map[*Conn]struct{} // guarded by mu
}

func (s *Live) add(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
}

func (s *Live) remove(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Live) snapshot() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Len counts the live connections.
func (s *Live) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
