package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// hostNet dials from the test's own network namespace.
type hostNet struct{}

func (hostNet) Listen(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }
func (hostNet) Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}
func (n hostNet) DialFrom(ctx context.Context, _ netip.AddrPort, addr netip.AddrPort) (net.Conn, error) {
	return n.Dial(ctx, addr)
}
func (hostNet) Cookie() (uint64, error) { return 0, nil }
func (hostNet) Close() error            { return nil }

func newTestTransport(t *testing.T, fo Failover) *Transport {
	t.Helper()
	lim, err := limits.New(0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := hbone.NewClient(hbone.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	tr := New(Options{HBONE: c, Limits: lim, Record: record.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 0),
		DialTimeout: 5 * time.Second, Balancer: balance.New(), Failover: fo})
	t.Cleanup(func() { tr.Close() })
	return tr
}

// refusingAddr is a loopback port nothing listens on.
func refusingAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netaddr.AddrPort(ln.Addr())
	ln.Close()
	return a
}

func listening(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netaddr.AddrPort(ln.Addr())
}

var svc = &meshconfig.Service{Name: "dv", Namespace: "agents", Ports: []meshconfig.ServicePort{{Port: 80}}}

func serviceFlow() *flow.Flow {
	f := flow.New(flow.Outbound, "", netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("10.96.0.7:80"))
	f.Service, f.ServicePort = svc, &svc.Ports[0]
	return f
}

func name(f *flow.Flow, e *balance.Endpoint) { f.Upstream, f.Protocol = e.Addr, flow.Passthrough }

// fixed is a Service's endpoints that never change.
func fixed(eps []balance.Endpoint) Endpoints {
	return Endpoints{Current: func() ([]balance.Endpoint, <-chan struct{}) { return eps, nil }, Name: name}
}

func ep(key string, a netip.AddrPort, ready bool) balance.Endpoint {
	return balance.Endpoint{Key: key, Addr: a, Ready: ready}
}

// TestDialServiceFailsOver: with one endpoint refusing, every connection
// reaches the other, the refusals counted as retries of the service.
func TestDialServiceFailsOver(t *testing.T) {
	tr := newTestTransport(t, DefaultFailover)
	good := listening(t)
	eps := []balance.Endpoint{ep("dead", refusingAddr(t), true), ep("good", good, true)}
	pod := &flow.Pod{Net: hostNet{}}
	// Two connections open on the good endpoint make the dead one the
	// cheaper first choice.
	for range 2 {
		c := tr.balancer.Begin("agents/dv", &eps[1])
		defer c.Done()
	}
	for range 50 {
		f := serviceFlow()
		c, done, err := tr.DialService(context.Background(), pod, f, fixed(eps))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if f.Upstream != good {
			t.Fatalf("connected to %s, want %s", f.Upstream, good)
		}
		c.Close()
		done()
	}
	m := tr.rec.M
	if got := testutil.ToFloat64(m.ServiceConns.WithLabelValues("agents/dv", "ok")); got != 50 {
		t.Errorf("ok connections counted %v, want 50", got)
	}
	if got := testutil.ToFloat64(m.ServiceRetries.WithLabelValues("agents/dv", "refused")); got < 1 {
		t.Errorf("no refused retry counted")
	}
	if s := tr.balancer.Snapshot("agents/dv", &eps[0]); s.Failures < 1 || s.Open != 0 {
		t.Errorf("dead endpoint: %+v, want failures and nothing open", s)
	}
	if s := tr.balancer.Snapshot("agents/dv", &eps[1]); s.Open != 2 {
		t.Errorf("open on the good endpoint after every conn ended: %d, want the 2 held", s.Open)
	}
}

// TestDialServiceAllFail: every endpoint refusing gives an error after the
// attempts, within the budget, naming the service.
func TestDialServiceAllFail(t *testing.T) {
	fo := DefaultFailover
	fo.Attempts = 4
	tr := newTestTransport(t, fo)
	eps := []balance.Endpoint{ep("a", refusingAddr(t), true), ep("b", refusingAddr(t), true)}
	f := serviceFlow()
	start := time.Now()
	_, _, err := tr.DialService(context.Background(), &flow.Pod{Net: hostNet{}}, f, fixed(eps))
	took := time.Since(start)
	if err == nil || f.Attempts != 4 {
		t.Fatalf("err %v after %d attempts, want an error after 4", err, f.Attempts)
	}
	if took > fo.Budget {
		t.Errorf("took %s, more than the budget %s", took, fo.Budget)
	}
	t.Logf("all endpoints refusing: %v after %s", err, took)
	if got := testutil.ToFloat64(tr.rec.M.ServiceConns.WithLabelValues("agents/dv", "error")); got != 1 {
		t.Errorf("error connections counted %v, want 1", got)
	}
}

// TestDialServiceNoEndpoint: no ready endpoint refuses at once.
func TestDialServiceNoEndpoint(t *testing.T) {
	tr := newTestTransport(t, DefaultFailover)
	eps := []balance.Endpoint{ep("a", listening(t), false)}
	f := serviceFlow()
	_, _, err := tr.DialService(context.Background(), &flow.Pod{Net: hostNet{}}, f, fixed(eps))
	if !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("err %v, want ErrNoEndpoint", err)
	}
	if got := testutil.ToFloat64(tr.rec.M.ServiceConns.WithLabelValues("agents/dv", "no_endpoint")); got != 1 {
		t.Errorf("no_endpoint counted %v, want 1", got)
	}
}

// TestDialServiceNewConfig: the only endpoint refuses (a rollout's old pod
// gone), then a new config brings the new one: the retry takes it as soon
// as the config changes, without waiting out the backoff.
func TestDialServiceNewConfig(t *testing.T) {
	fo := DefaultFailover
	fo.BackoffBase, fo.BackoffMax = 2*time.Second, 2*time.Second
	fo.Budget = 10 * time.Second
	tr := newTestTransport(t, fo)
	oldEP, newEP := ep("old", refusingAddr(t), true), ep("new", listening(t), true)
	var mu sync.Mutex
	cur, changed := []balance.Endpoint{oldEP}, make(chan struct{})
	eps := Endpoints{Name: name, Current: func() ([]balance.Endpoint, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return cur, changed
	}}
	tried := make(chan struct{})
	go func() {
		// Once the old endpoint was tried, swap in the new config.
		<-tried
		mu.Lock()
		cur = []balance.Endpoint{newEP}
		close(changed)
		mu.Unlock()
	}()
	f := serviceFlow()
	eps.Name = func(f *flow.Flow, e *balance.Endpoint) {
		name(f, e)
		if e.Key == "old" {
			select {
			case <-tried:
			default:
				close(tried)
			}
		}
	}
	start := time.Now()
	c, done, err := tr.DialService(context.Background(), &flow.Pod{Net: hostNet{}}, f, eps)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer done()
	c.Close()
	if f.Upstream != newEP.Addr || f.Attempts != 2 {
		t.Errorf("connected to %s after %d attempts, want the new endpoint on the second", f.Upstream, f.Attempts)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %s: the retry waited out the backoff instead of the config change", took)
	}
}

func TestFailoverBackoff(t *testing.T) {
	fo := DefaultFailover
	for n := 1; n <= 10; n++ {
		bound := min(fo.BackoffMax, fo.BackoffBase<<(n-1))
		for range 100 {
			if d := fo.backoff(n); d < bound/2 || d > bound {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, bound/2, bound)
			}
		}
	}
	for _, bad := range []Failover{{}, {Attempts: 1, Timeout: time.Second}, {Attempts: 1, Timeout: 1, Budget: 1, BackoffBase: 2, BackoffMax: 1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if err := DefaultFailover.Validate(); err != nil {
		t.Error(err)
	}
}

// TestDialServiceConnectionLimit: with one connection slot per endpoint,
// two connections take the two endpoints, a third is refused at once
// with ErrConnectionLimit (no connect tried), and a slot freed by the end
// of a connection is taken again.
func TestDialServiceConnectionLimit(t *testing.T) {
	tr := newTestTransport(t, DefaultFailover)
	eps := []balance.Endpoint{ep("a", listening(t), true), ep("b", listening(t), true)}
	var mu sync.Mutex
	open := map[string]int{}
	e := fixed(eps)
	e.Traffic.Admit = func(e *balance.Endpoint) (func(), bool) {
		mu.Lock()
		defer mu.Unlock()
		if open[e.Key] >= 1 {
			return nil, false
		}
		open[e.Key]++
		return func() { mu.Lock(); open[e.Key]--; mu.Unlock() }, true
	}
	pod := &flow.Pod{Net: hostNet{}}
	var dones []func()
	seen := map[netip.AddrPort]bool{}
	for range 2 {
		f := serviceFlow()
		c, done, err := tr.DialService(context.Background(), pod, f, e)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.Close()
		dones = append(dones, done)
		seen[f.Upstream] = true
	}
	if len(seen) != 2 {
		t.Fatalf("two connections reached %v, want both endpoints", seen)
	}
	f := serviceFlow()
	if _, _, err := tr.DialService(context.Background(), pod, f, e); !errors.Is(err, ErrConnectionLimit) || f.Attempts != 0 {
		t.Fatalf("third connection: %v after %d connects, want ErrConnectionLimit and none", err, f.Attempts)
	}
	if got := testutil.ToFloat64(tr.rec.M.ServiceConns.WithLabelValues("agents/dv", "connection_limit")); got != 1 {
		t.Errorf("connection_limit counted %v, want 1", got)
	}
	dones[0]()
	f = serviceFlow()
	c, done, err := tr.DialService(context.Background(), pod, f, e)
	if err != nil {
		t.Fatalf("after a connection ended: %v", err)
	}
	c.Close()
	done()
	dones[1]()
	mu.Lock()
	defer mu.Unlock()
	if open["a"] != 0 || open["b"] != 0 {
		t.Errorf("slots still taken after every connection ended: %v", open)
	}
}

// TestDialServiceEjects: under an outlier policy, an endpoint whose
// connects fail twice in a row is ejected (Ejected told once) and no
// connection tries it while the ejection lasts; every connection reaches
// the good endpoint meanwhile.
func TestDialServiceEjects(t *testing.T) {
	tr := newTestTransport(t, DefaultFailover)
	good := listening(t)
	eps := []balance.Endpoint{ep("dead", refusingAddr(t), true), ep("good", good, true)}
	e := fixed(eps)
	e.Traffic.Policy = &balance.Policy{Algorithm: meshconfig.LBRoundRobin,
		Outlier: &meshconfig.Outlier{ConsecutiveFailures: 2, BaseEjection: time.Hour, MaxEjectedPercent: 50}}
	var ejected []string
	e.Traffic.Ejected = func(e *balance.Endpoint) { ejected = append(ejected, e.Key) }
	pod := &flow.Pod{Net: hostNet{}}
	dial := func() *flow.Flow {
		t.Helper()
		f := serviceFlow()
		c, done, err := tr.DialService(context.Background(), pod, f, e)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.Close()
		done()
		if f.Upstream != good {
			t.Fatalf("connected to %s, want %s", f.Upstream, good)
		}
		return f
	}
	for range 6 {
		dial()
	}
	if len(ejected) != 1 || ejected[0] != "dead" {
		t.Fatalf("ejected %v, want dead once", ejected)
	}
	failures := tr.balancer.Snapshot("agents/dv", &eps[0]).Failures
	for range 20 {
		if f := dial(); f.Attempts != 1 {
			t.Fatalf("a connection after the ejection took %d connects, want 1 (the dead endpoint skipped)", f.Attempts)
		}
	}
	if s := tr.balancer.Snapshot("agents/dv", &eps[0]); s.Failures != failures {
		t.Errorf("the ejected endpoint was tried: failures %d -> %d", failures, s.Failures)
	}
}

// deadlineNet never connects: each dial waits for its context and keeps
// how long that context gave it.
type deadlineNet struct {
	hostNet
	mu    sync.Mutex
	given []time.Duration
}

func (n *deadlineNet) Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		n.mu.Lock()
		n.given = append(n.given, time.Until(dl))
		n.mu.Unlock()
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (n *deadlineNet) DialFrom(ctx context.Context, _ netip.AddrPort, addr netip.AddrPort) (net.Conn, error) {
	return n.Dial(ctx, addr)
}

// TestDialServiceConnectTimeout: the TrafficPolicy's connect timeout,
// not the node's, bounds each connect, and a timed-out connect is tried
// on the other endpoint.
func TestDialServiceConnectTimeout(t *testing.T) {
	fo := DefaultFailover
	fo.Attempts = 2
	tr := newTestTransport(t, fo)
	eps := []balance.Endpoint{ep("a", listening(t), true), ep("b", listening(t), true)}
	e := fixed(eps)
	e.Traffic.Connect = 30 * time.Millisecond
	n := &deadlineNet{}
	f := serviceFlow()
	_, _, err := tr.DialService(context.Background(), &flow.Pod{Net: n}, f, e)
	if !errors.Is(err, context.DeadlineExceeded) || f.Attempts != 2 {
		t.Fatalf("err %v after %d attempts, want a deadline after 2", err, f.Attempts)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.given) != 2 {
		t.Fatalf("%d connects, want 2", len(n.given))
	}
	for _, d := range n.given {
		if d > e.Traffic.Connect {
			t.Errorf("a connect was given %s, more than the policy's %s", d, e.Traffic.Connect)
		}
	}
	if got := testutil.ToFloat64(tr.rec.M.ServiceRetries.WithLabelValues("agents/dv", "timeout")); got != 1 {
		t.Errorf("timeout retries counted %v, want 1", got)
	}
}
