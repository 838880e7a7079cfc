package balance

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"
)

func endpoints(n int) []Endpoint {
	out := make([]Endpoint, n)
	for i := range out {
		out[i] = Endpoint{Key: fmt.Sprintf("uid-%d", i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080), Ready: true}
	}
	return out
}

// clock is a fake time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestBalancer() (*Balancer, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	b := New()
	b.now = c.now
	return b, c
}

// pickAll makes n connections that each observe latency(endpoint) and
// end at once, and counts the picks per endpoint.
func pickAll(b *Balancer, c *clock, eps []Endpoint, n int, latency func(*Endpoint) time.Duration) map[string]int {
	got := map[string]int{}
	for range n {
		e := b.Pick("ns/svc", eps, nil)
		got[e.Key]++
		conn := b.Begin("ns/svc", e)
		c.t = c.t.Add(latency(e))
		conn.Connected()
		conn.Done()
	}
	return got
}

func TestPickSkipsNotReadyAndExcluded(t *testing.T) {
	b, _ := newTestBalancer()
	eps := endpoints(3)
	eps[0].Ready, eps[2].Ready = false, false
	for range 100 {
		if e := b.Pick("ns/svc", eps, nil); e == nil || e.Key != "uid-1" {
			t.Fatalf("picked %v, want the only ready endpoint uid-1", e)
		}
	}
	if e := b.Pick("ns/svc", eps, func(e *Endpoint) bool { return e.Key == "uid-1" }); e != nil {
		t.Fatalf("picked %s, want none (the ready one is excluded)", e.Key)
	}
	if e := b.Pick("ns/svc", nil, nil); e != nil {
		t.Fatalf("picked %s from no endpoints", e.Key)
	}
}

// TestPickEvenWhenEqual: endpoints alike get shares within 5% of even.
func TestPickEvenWhenEqual(t *testing.T) {
	b, c := newTestBalancer()
	eps := endpoints(3)
	const n = 30000
	got := pickAll(b, c, eps, n, func(*Endpoint) time.Duration { return time.Millisecond })
	for _, e := range eps {
		if share := float64(got[e.Key]) / n; math.Abs(share-1.0/3) > 0.05/3 {
			t.Errorf("%s got %.3f of the picks, want 1/3 within 5%%: %v", e.Key, share, got)
		}
	}
}

// TestPickAvoidsSlow: an endpoint with 20x the latency of the others gets
// a small share.
func TestPickAvoidsSlow(t *testing.T) {
	b, c := newTestBalancer()
	eps := endpoints(3)
	const n = 3000
	got := pickAll(b, c, eps, n, func(e *Endpoint) time.Duration {
		if e.Key == "uid-0" {
			return 20 * time.Millisecond
		}
		return time.Millisecond
	})
	if share := float64(got["uid-0"]) / n; share > 0.10 {
		t.Errorf("slow endpoint got %.3f of the picks, want under 0.10: %v", share, got)
	}
	t.Logf("split with uid-0 slow: %v", got)
}

// TestPickWeighsOpenConnections: an endpoint with many open connections
// gets no new one while the others have few.
func TestPickWeighsOpenConnections(t *testing.T) {
	b, c := newTestBalancer()
	eps := endpoints(2)
	connect := func(e *Endpoint) {
		conn := b.Begin("ns/svc", e)
		c.t = c.t.Add(time.Millisecond)
		conn.Connected()
	}
	for range 10 {
		connect(&eps[0])
	}
	connect(&eps[1])
	for range 5 {
		e := b.Pick("ns/svc", eps, nil)
		if e.Key != "uid-1" {
			t.Fatalf("picked %s with 10 open, want uid-1", e.Key)
		}
		connect(e)
	}
	if got := b.Snapshot("ns/svc", &eps[0]).Open; got != 10 {
		t.Errorf("open on uid-0 = %d, want 10", got)
	}
}

// TestPeakEWMA: a lone slow observation hardly moves the estimate, two in
// a row are believed at once; the estimate then decays toward zero while
// nothing is observed; a failure counts as Penalty at once.
func TestPeakEWMA(t *testing.T) {
	b, c := newTestBalancer()
	e := endpoints(1)[0]
	connect := func(took time.Duration) {
		conn := b.Begin("ns/svc", &e)
		c.t = c.t.Add(took)
		conn.Connected()
		conn.Done()
	}
	connect(time.Millisecond)
	if got := b.Snapshot("ns/svc", &e).EWMA; got != time.Millisecond {
		t.Fatalf("after a first 1ms connect: ewma %s, want 1ms", got)
	}
	connect(50 * time.Millisecond)
	if got := b.Snapshot("ns/svc", &e).EWMA; got > 5*time.Millisecond {
		t.Fatalf("after one 50ms connect: ewma %s, want a lone outlier not to set it", got)
	}
	connect(50 * time.Millisecond)
	if got := b.Snapshot("ns/svc", &e).EWMA; got != 50*time.Millisecond {
		t.Fatalf("after two 50ms connects: ewma %s, want 50ms at once", got)
	}
	c.t = c.t.Add(DecayWindow)
	if got, want := b.Snapshot("ns/svc", &e).EWMA, time.Duration(math.Round(float64(50*time.Millisecond)/math.E)); absDiff(got, want) > time.Microsecond {
		t.Errorf("one window later: ewma %s, want %s", got, want)
	}
	// Quick samples below the estimate pull it down: each weighs at least
	// minWeight, however little time passed since the one before.
	for range 40 {
		connect(time.Millisecond)
	}
	if got := b.Snapshot("ns/svc", &e).EWMA; got > 3*time.Millisecond {
		t.Errorf("after 40 quick 1ms connects: ewma %s, want it to follow them (under 3ms)", got)
	}
	b.Begin("ns/svc", &e).Failed()
	s := b.Snapshot("ns/svc", &e)
	if s.EWMA != Penalty || s.Failures != 1 || s.Open != 0 || s.Picks != 44 {
		t.Errorf("after a failure: %+v, want ewma %s, 1 failure, 0 open, 44 picks", s, Penalty)
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

// TestNewEndpointTriedFirst: an endpoint nothing was observed on is
// chosen before known ones while it has no connection, and not again
// while its first connect is under way.
func TestNewEndpointTriedFirst(t *testing.T) {
	b, c := newTestBalancer()
	eps := endpoints(2)
	conn := b.Begin("ns/svc", &eps[0])
	c.t = c.t.Add(time.Millisecond)
	conn.Connected()
	conn.Done()
	if e := b.Pick("ns/svc", eps, nil); e.Key != "uid-1" {
		t.Fatalf("picked %s, want the endpoint never tried", e.Key)
	}
	first := b.Begin("ns/svc", &eps[1]) // its first connect, under way
	for range 10 {
		if e := b.Pick("ns/svc", eps, nil); e.Key != "uid-0" {
			t.Fatalf("picked %s while its first connect is under way, want uid-0", e.Key)
		}
	}
	first.Done()
}

// TestPrune: stats of endpoints gone are forgotten; a connection still
// open on one ends without harm.
func TestPrune(t *testing.T) {
	b, _ := newTestBalancer()
	eps := endpoints(2)
	conn := b.Begin("ns/svc", &eps[0])
	conn.Connected()
	b.Begin("ns/svc", &eps[1]).Connected()
	b.Prune(func(_, ep string) bool { return ep == "uid-1" })
	if got := b.Snapshot("ns/svc", &eps[0]); got.Open != 0 || got.Picks != 0 {
		t.Errorf("pruned endpoint still has stats %+v", got)
	}
	if got := b.Snapshot("ns/svc", &eps[1]).Open; got != 1 {
		t.Errorf("kept endpoint open = %d, want 1", got)
	}
	conn.Done()
}
