package balance

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// TestPickForAffinity: requests with one key land on one endpoint; when it
// goes they move to one other and stay there; keys spread over all.
func TestPickForAffinity(t *testing.T) {
	b, _ := newTestBalancer()
	eps := endpoints(3)
	p := &Policy{}
	first, _ := b.PickFor("ns/svc", eps, nil, p, Key{Value: "session-1", Has: true})
	for range 1000 {
		if e, _ := b.PickFor("ns/svc", eps, nil, p, Key{Value: "session-1", Has: true}); e != first {
			t.Fatalf("session-1 went to %s after %s", e.Key, first.Key)
		}
	}
	gone := func(e *Endpoint) bool { return e.Key == first.Key }
	moved, _ := b.PickFor("ns/svc", eps, gone, p, Key{Value: "session-1", Has: true})
	if moved == nil || moved == first {
		t.Fatalf("with %s gone: %v", first.Key, moved)
	}
	for range 1000 {
		if e, _ := b.PickFor("ns/svc", eps, gone, p, Key{Value: "session-1", Has: true}); e != moved {
			t.Fatalf("after the move session-1 went to %s, then %s", moved.Key, e.Key)
		}
	}
	seen := map[string]int{}
	for i := range 3000 {
		e, _ := b.PickFor("ns/svc", eps, nil, p, Key{Value: fmt.Sprint("s", i), Has: true})
		seen[e.Key]++
	}
	for _, e := range eps {
		if seen[e.Key] < 800 {
			t.Errorf("3000 keys over 3 endpoints: %v", seen)
			break
		}
	}
}

func TestPickForRoundRobin(t *testing.T) {
	b, _ := newTestBalancer()
	eps := endpoints(3)
	got := map[string]int{}
	for range 300 {
		e, _ := b.PickFor("ns/svc", eps, nil, &Policy{Algorithm: meshconfig.LBRoundRobin}, Key{})
		got[e.Key]++
	}
	for _, e := range eps {
		if got[e.Key] != 100 {
			t.Fatalf("round robin over 300: %v", got)
		}
	}
}

// TestPickForLimit: an endpoint with MaxRequestsPerEndpoint open is
// skipped, and with every one full the pick says so.
func TestPickForLimit(t *testing.T) {
	b, _ := newTestBalancer()
	eps := endpoints(2)
	p := &Policy{MaxRequestsPerEndpoint: 1}
	a, _ := b.PickFor("ns/svc", eps, nil, p, Key{})
	b.Begin("ns/svc", a)
	c, _ := b.PickFor("ns/svc", eps, nil, p, Key{})
	if c == nil || c == a {
		t.Fatalf("second pick %v, want the other endpoint than %s", c, a.Key)
	}
	b.Begin("ns/svc", c)
	if e, full := b.PickFor("ns/svc", eps, nil, p, Key{}); e != nil || !full {
		t.Fatalf("both at their limit: %v, full %v", e, full)
	}
}

// TestOutlier: consecutive failures eject an endpoint for a time that
// grows with each ejection; after it one request probes it; a failed
// probe ejects it again, a good one restores it; the ejected share is
// capped.
func TestOutlier(t *testing.T) {
	b, c := newTestBalancer()
	eps := endpoints(3)
	p := &Policy{Outlier: &meshconfig.Outlier{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second, MaxEjection: 25 * time.Second, MaxEjectedPercent: 50}}
	bad := &eps[0]
	picks := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			e, _ := b.PickFor("ns/svc", eps, nil, p, Key{})
			got[e.Key]++
			b.Result("ns/svc", e, p, e == bad)
		}
		return got
	}
	for i := range 2 {
		if b.Result("ns/svc", bad, p, true) {
			t.Fatalf("ejected after %d failures, want 3", i+1)
		}
	}
	if !b.Result("ns/svc", bad, p, true) || !b.Stats("ns/svc", bad).Ejected() {
		t.Fatal("not ejected after 3 failures in a row")
	}
	if got := picks(100); got[bad.Key] != 0 {
		t.Fatalf("ejected endpoint picked: %v", got)
	}
	c.t = c.t.Add(10 * time.Second)
	// The probe fails: ejected again, for twice as long.
	if got := picks(100); got[bad.Key] != 1 {
		t.Fatalf("after the ejection, picks %v; want one probe", got)
	}
	c.t = c.t.Add(19 * time.Second)
	if got := picks(50); got[bad.Key] != 0 {
		t.Fatalf("second ejection (20s) over after 19s: %v", got)
	}
	c.t = c.t.Add(time.Second)
	bad = nil // it recovered: the probe succeeds
	got := picks(300)
	if got[eps[0].Key] < 50 {
		t.Fatalf("recovered endpoint after a good probe: %v", got)
	}
	if b.Stats("ns/svc", &eps[0]).Ejected() {
		t.Fatal("still ejected after a good probe")
	}
	if b.Ejections() != 2 {
		t.Errorf("%d ejections, want 2", b.Ejections())
	}

	// The cap: of 3 endpoints, 50 % lets one be ejected, not two.
	b2, _ := newTestBalancer()
	for _, e := range []*Endpoint{&eps[0], &eps[1]} {
		b2.Stats("ns/svc", &eps[2]) // known to the balancer
		for range 3 {
			b2.Result("ns/svc", e, p, true)
		}
	}
	if !b2.Stats("ns/svc", &eps[0]).Ejected() || b2.Stats("ns/svc", &eps[1]).Ejected() {
		t.Error("the cap on the ejected share: want the first ejected, the second kept")
	}
}
