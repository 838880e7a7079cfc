// Package balance chooses the endpoint of a Service a new connection goes
// to: power of two choices over a peak-EWMA of connect latency, weighted by
// the connections each endpoint has open. Not-ready endpoints are never
// chosen; an endpoint that leaves the registry is not chosen again, while
// the connections it has keep their accounting until they end.
//
// Peak-EWMA (Finagle's, as Linkerd uses it): an observation above the
// estimate replaces it at once (a slow endpoint is believed at once), one
// below it is averaged in with a weight that grows with the time since the
// last observation; the estimate also decays toward zero while nothing is
// observed, so an endpoint that was slow is tried again after a while
// rather than starved for good. A failed connect counts as an observation
// of Penalty.
//
// One change: the peak is taken on the lesser of the last two
// observations, so a lone outlier (a connect that waited for a CPU on a
// busy node, which says nothing about the endpoint) does not set the
// estimate for a whole decay window; two slow connects in a row do. On a
// busy two-CPU node, plain peak-EWMA split 3000 connections over three
// equal endpoints as unevenly as 729/1126/1145.
//
// And a sample below the estimate weighs at least minWeight, whatever the
// time since the last one: a simulation of 3000 connections, 8 at a time,
// over three equal endpoints with log-normal connect times (σ 0.5) spread
// at worst 15% off even over 200 runs with the time weight alone, 10%
// with the floor; an endpoint five times slower got 2.5% of them.
package balance

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Defaults.
const (
	// DecayWindow is the EWMA's time constant: connects come at
	// connection rates, and Linkerd's 10s (for request latency) held one
	// stall's peak over a whole burst.
	DecayWindow = 2 * time.Second
	// Penalty is the latency a failed connect counts as.
	Penalty = time.Second
	// minWeight is the least weight a sample below the estimate gets:
	// at connection rates the time-based weight alone (0.1% a sample at
	// 1000 connects a second) left the estimate to its peaks and its
	// decay; with the floor it follows the last twenty or so samples.
	minWeight = 0.05
)

// Endpoint is one candidate: a Service backend as this node reaches it.
type Endpoint struct {
	// Key names the backend within its service: the pod's uid, or its
	// address for an endpoint that is not a pod.
	Key string
	// Addr is where to connect: the backend's address (of the family the
	// app asked for when it has one) and the target port.
	Addr netip.AddrPort
	// Workload is the backing pod, nil when it is not one the mesh knows.
	Workload *meshconfig.Workload
	Ready    bool
}

// Mesh reports whether e is reached over HBONE: a pod in the mesh.
func (e *Endpoint) Mesh() bool { return e.Workload != nil && e.Workload.Enrolled }

// Stats is the balancer's state of one endpoint of one service.
type Stats struct {
	open     atomic.Int64
	picks    atomic.Uint64
	failures atomic.Uint64

	mu    sync.Mutex
	ewma  float64 // nanoseconds
	last  float64 // the previous observation, nanoseconds
	seen  bool    // an observation was made
	stamp time.Time

	outlier outlier
}

// Open is the number of connections open to the endpoint through this node.
func (s *Stats) Open() int64 { return s.open.Load() }

// cost is the estimate at now times the open connections plus one. An
// endpoint nothing was observed on yet costs nothing while it has no
// connection (so a new endpoint is tried at once) and Penalty per
// connection while its first ones are under way (so a burst does not all
// go to it before it says how fast it is), as in Finagle.
func (s *Stats) cost(now time.Time) float64 {
	s.mu.Lock()
	e, seen := decay(s.ewma, now.Sub(s.stamp)), s.seen
	s.mu.Unlock()
	open := float64(s.open.Load())
	if !seen {
		return float64(Penalty) * open
	}
	return e * (open + 1)
}

// EWMA is the current latency estimate.
func (s *Stats) EWMA(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(decay(s.ewma, now.Sub(s.stamp)))
}

func decay(v float64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return v
	}
	return v * math.Exp(-float64(elapsed)/float64(DecayWindow))
}

// observe takes a connect latency; a failure (failed) is believed at once.
func (s *Stats) observe(now time.Time, rtt time.Duration, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := float64(rtt)
	if !s.seen {
		s.ewma, s.last, s.seen, s.stamp = x, x, true, now
		return
	}
	cur := decay(s.ewma, now.Sub(s.stamp))
	peak := min(x, s.last)
	if failed {
		peak = x
	}
	if peak > cur {
		s.ewma = peak
	} else {
		a := max(1-math.Exp(-float64(now.Sub(s.stamp))/float64(DecayWindow)), minWeight)
		s.ewma = cur + a*(x-cur)
	}
	s.last, s.stamp = x, now
}

// Balancer keeps the stats of every endpoint of every service and picks.
// Safe for concurrent use.
type Balancer struct {
	now func() time.Time

	mu    sync.Mutex
	stats map[key]*Stats

	rr        sync.Map // service -> *atomic.Uint64, round robin's counter
	ejections atomic.Uint64
}

type key struct{ service, endpoint string }

// New returns a Balancer.
func New() *Balancer { return &Balancer{now: time.Now, stats: map[key]*Stats{}} }

// Stats returns the stats of endpoint e of service (created on first use).
func (b *Balancer) Stats(service string, e *Endpoint) *Stats {
	k := key{service, e.Key}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats[k]
	if s == nil {
		s = &Stats{stamp: b.now()}
		b.stats[k] = s
	}
	return s
}

// Pick chooses among the ready endpoints of eps that skip does not exclude
// (nil excludes none): two at random, the one with the lower cost. It
// returns nil when none is eligible.
func (b *Balancer) Pick(service string, eps []Endpoint, skip func(*Endpoint) bool) *Endpoint {
	var a, c *Endpoint
	n := 0
	// Reservoir-sample two distinct eligible endpoints in one pass.
	for i := range eps {
		e := &eps[i]
		if !e.Ready || (skip != nil && skip(e)) {
			continue
		}
		n++
		switch {
		case n == 1:
			a = e
		case n == 2:
			c = e
		default:
			if j := rand.IntN(n); j == 0 {
				a = e
			} else if j == 1 {
				c = e
			}
		}
	}
	if c == nil {
		return a
	}
	return b.cheaper(service, a, c, b.now())
}

// cheaper is the one of a and c whose cost is lower at now (either, at
// random, on a tie).
func (b *Balancer) cheaper(service string, a, c *Endpoint, now time.Time) *Endpoint {
	ca, cc := b.Stats(service, a).cost(now), b.Stats(service, c).cost(now)
	if cc < ca || (cc == ca && rand.IntN(2) == 0) {
		return c
	}
	return a
}

// Conn is the accounting of one connection to a chosen endpoint: Begin it
// when the connect starts, then call Connected or Failed, and Done when a
// connected one ends.
type Conn struct {
	b     *Balancer
	s     *Stats
	start time.Time
}

// Begin counts a connection to e of service as open.
func (b *Balancer) Begin(service string, e *Endpoint) *Conn {
	s := b.Stats(service, e)
	s.open.Add(1)
	s.picks.Add(1)
	return &Conn{b: b, s: s, start: b.now()}
}

// Restart starts the connect's clock again: for HBONE, as the CONNECT goes
// out on a pooled connection, so that the pool's TLS handshake (once per
// connection, not per endpoint's answer) is not taken for the endpoint's
// latency. Call it from the goroutine that calls Connected.
func (c *Conn) Restart() { c.start = c.b.now() }

// Connected observes the connect latency.
func (c *Conn) Connected() { now := c.b.now(); c.s.observe(now, now.Sub(c.start), false) }

// ConnectedIn observes rtt, timed by the caller, as the latency: a
// request's time to its response's first byte, from where the caller's
// clock started.
func (c *Conn) ConnectedIn(rtt time.Duration) { c.s.observe(c.b.now(), rtt, false) }

// Failed observes a failed connect (Penalty) and ends the connection.
func (c *Conn) Failed() {
	c.s.failures.Add(1)
	c.s.observe(c.b.now(), Penalty, true)
	c.s.open.Add(-1)
}

// Done ends a connected connection.
func (c *Conn) Done() { c.s.open.Add(-1) }

// Prune forgets the stats of endpoints keep says are gone (service key,
// endpoint key); connections still open on them keep their own pointer.
func (b *Balancer) Prune(keep func(service, endpoint string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.stats {
		if !keep(k.service, k.endpoint) {
			delete(b.stats, k)
		}
	}
}

// Snapshot is an endpoint's balancer state, for the admin endpoint.
type Snapshot struct {
	EWMA     time.Duration
	Open     int64
	Picks    uint64
	Failures uint64
	Ejected  bool
}

// Snapshot returns the state of e of service (zero when never used).
func (b *Balancer) Snapshot(service string, e *Endpoint) Snapshot {
	b.mu.Lock()
	s := b.stats[key{service, e.Key}]
	b.mu.Unlock()
	if s == nil {
		return Snapshot{}
	}
	return Snapshot{EWMA: s.EWMA(b.now()), Open: s.open.Load(), Picks: s.picks.Load(), Failures: s.failures.Load(), Ejected: s.Ejected()}
}
