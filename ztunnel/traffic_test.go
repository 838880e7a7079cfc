package ztunnel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// withTraffic sets tp on agents/web (endpoints b and c).
func (e *httpEnv) withTraffic(tp *meshconfig.TrafficPolicy) {
	e.t.Helper()
	c := *e.node.Index().Config
	c.Services = append([]meshconfig.Service(nil), c.Services...)
	c.Services[0].Traffic = tp
	if err := c.Validate(); err != nil {
		e.t.Fatal(err)
	}
	e.node.SetConfig(&c)
}

// webGet sends GET path with header h and returns the status, the body and
// the Agentmesh-Error header.
func webGet(t *testing.T, c *http.Client, path string, h http.Header) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://web.agents"+path, nil)
	req.Header = h
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Agentmesh-Error")
}

// TestTrafficPolicyAffinity: requests with one Mcp-Session-Id land on one
// endpoint; when it leaves the Service they move to the other and stay.
func TestTrafficPolicyAffinity(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b", "uid-c")
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/sticky", Affinity: &meshconfig.Affinity{Key: meshconfig.HashKey{Header: "Mcp-Session-Id"}}})
	c, _ := e.client(false)
	h := http.Header{"Mcp-Session-Id": {"conversation-1"}}
	_, first, _ := webGet(t, c, "/", h)
	pinned := strings.Fields(first)[0]
	for i := range 200 {
		if _, body, _ := webGet(t, c, "/", h); strings.Fields(body)[0] != pinned {
			t.Fatalf("request %d of the session went to %q, the first to %q", i, body, pinned)
		}
	}
	// The pinned endpoint goes: the session moves and stays.
	cfg := *e.node.Index().Config
	cfg.Services = append([]meshconfig.Service(nil), cfg.Services...)
	web := &cfg.Services[0]
	web.Endpoints = append([]meshconfig.Endpoint(nil), web.Endpoints...)
	for i := range web.Endpoints {
		if (pinned == "server") == (web.Endpoints[i].WorkloadUID == "uid-b") {
			web.Endpoints[i].Ready = false
		}
	}
	e.node.SetConfig(&cfg)
	_, moved, _ := webGet(t, c, "/", h)
	other := strings.Fields(moved)[0]
	if other == pinned {
		t.Fatalf("the session stayed on %q after it left the Service", pinned)
	}
	for i := range 50 {
		if _, body, _ := webGet(t, c, "/", h); strings.Fields(body)[0] != other {
			t.Fatalf("request %d after the move went to %q, want %q", i, body, other)
		}
	}
}

// TestTrafficPolicyOutlier: an endpoint answering 5xx to everything is
// ejected after 3 in a row and gets no request while ejected; after the
// ejection one request probes it, and once it answers well it gets its
// share again. And peak-EWMA alone (no outlier detection) shuns an
// endpoint that fails fast rather than sending it more.
func TestTrafficPolicyOutlier(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b", "uid-c")
	// Round robin: the failing endpoint keeps getting its share until
	// ejected (peak-EWMA would shun it on its own).
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/eject", LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBRoundRobin}, Outlier: &meshconfig.Outlier{
		ConsecutiveFailures: 3, BaseEjection: 500 * time.Millisecond, MaxEjectedPercent: 50}})
	c, _ := e.client(false)
	e.failC.Store(true)
	ejected := time.Now()
	failures := 0
	for range 100 {
		code, _, _ := webGet(t, c, "/", nil)
		if code == http.StatusServiceUnavailable {
			failures++
			ejected = time.Now()
		}
	}
	if failures != 3 {
		t.Errorf("the failing endpoint answered %d of 100 requests, want 3 (then ejected)", failures)
	}
	e.logs.wait(t, map[string]any{"msg": "endpoint ejected", "service": "agents/web", "policy": "agents/eject"})
	idx := e.node.Index()
	ds := e.node.debugService(idx, idx.Service("agents", "web"))
	for _, ep := range ds.Endpoints {
		if ep.Ejected != (ep.Workload == "agents/server-c") {
			t.Errorf("/debug/services endpoint %s ejected %v", ep.Workload, ep.Ejected)
		}
	}
	if ds.Traffic == nil || ds.Traffic.Name != "agents/eject" {
		t.Errorf("/debug/services traffic policy %+v", ds.Traffic)
	}
	e.failC.Store(false)
	waitFor(t, "the ejection to end", func() bool { return time.Since(ejected) > 600*time.Millisecond })
	servedC := e.served["server-c"].Load()
	for range 100 {
		if code, _, _ := webGet(t, c, "/", nil); code != 200 {
			t.Fatalf("after recovery: %d", code)
		}
	}
	if n := e.served["server-c"].Load() - servedC; n < 40 {
		t.Errorf("the recovered endpoint served %d of 100 requests after its probe", n)
	}

	e.withTraffic(nil)
	e.failC.Store(true)
	failures = 0
	for range 100 {
		if code, _, _ := webGet(t, c, "/", nil); code == http.StatusServiceUnavailable {
			failures++
		}
	}
	if failures > 10 {
		t.Errorf("peak-EWMA sent %d of 100 requests to an endpoint that answers 503 at once", failures)
	}
}

// TestTrafficPolicyBreaker: with at most 2 requests in flight to the
// Service, a third gets 503 at once with the limit named, while the two
// admitted complete.
func TestTrafficPolicyBreaker(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-c")
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/guard", Breaker: &meshconfig.Breaker{MaxRequests: 2}})
	e.slowC.Store(int64(time.Second))
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		c, _ := e.client(false)
		wg.Go(func() { codes[i], _, _ = webGet(t, c, "/", nil) })
	}
	waitFor(t, "two requests in flight", func() bool { return e.served["server-c"].Load() == 2 })
	c, _ := e.client(false)
	start := time.Now()
	code, _, reason := webGet(t, c, "/", nil)
	if code != http.StatusServiceUnavailable || reason != "overflow_max_requests" || time.Since(start) > 500*time.Millisecond {
		t.Errorf("third request: %d %q after %v; want a fast 503 overflow_max_requests", code, reason, time.Since(start))
	}
	wg.Wait()
	if codes[0] != 200 || codes[1] != 200 {
		t.Errorf("the admitted requests: %v, want both 200", codes)
	}
}

// TestTrafficPolicyTimeouts: a response whose headers do not come within
// the first-byte timeout gets 504; an SSE stream whose gaps stay below the
// idle timeout is not cut, however long it lasts past the first-byte
// timeout; one with a longer gap is cut there.
func TestTrafficPolicyTimeouts(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-c")
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/t", Timeouts: &meshconfig.Timeouts{FirstByte: 200 * time.Millisecond, Idle: time.Second}})
	c, _ := e.client(false)
	e.slowC.Store(int64(time.Second))
	start := time.Now()
	code, _, reason := webGet(t, c, "/", nil)
	if code != http.StatusGatewayTimeout || reason != "first_byte_timeout" || time.Since(start) > 900*time.Millisecond {
		t.Errorf("slow headers: %d %q after %v; want 504 first_byte_timeout at about 200ms", code, reason, time.Since(start))
	}
	e.slowC.Store(0)
	code, body, _ := webGet(t, c, "/", nil)
	if code != 200 || !strings.HasPrefix(body, "server-c") {
		t.Errorf("a fast answer: %d %q", code, body)
	}
	// 8 events 300ms apart: 2.1s in all, each gap well below the idle 1s.
	code, body, _ = webGet(t, c, "/gaps?n=8&every=300ms", nil)
	if code != 200 || strings.Count(body, "data: ") != 8 {
		t.Errorf("a stream with short gaps: %d %q, want all 8 events", code, body)
	}
	// A 3s gap: cut at the idle timeout, after the first event.
	start = time.Now()
	req, _ := http.NewRequest(http.MethodGet, "http://web.agents/gaps?n=2&every=3s", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Count(string(b), "data: ") != 1 || rerr == nil || time.Since(start) > 2500*time.Millisecond {
		t.Errorf("a stream with a 3s gap under an idle timeout of 1s: %q, %v after %v; want it cut after the first event", b, rerr, time.Since(start))
	}
}

// TestTrafficPolicyRateLimit: the destination tunnel limits requests per
// source identity: the limited caller gets 429 with Retry-After, another
// caller of the same agent is unaffected; a limit on one MCP tool answers
// its calls past the limit with a JSON-RPC error carrying the call's id.
func TestTrafficPolicyRateLimit(t *testing.T) {
	// The same-node fast path would bypass the destination's buckets:
	// such requests go over the node's own HBONE listener.
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("same-node fast path %v", fast), func(t *testing.T) { testRateLimit(t, fast) })
	}
}

func testRateLimit(t *testing.T, fast bool) {
	e := newHTTPEnvWith(t, "http", func(o *NodeOptions) { o.SameNodeFastPath = fast }, "uid-b")
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/limits", RateLimit: &meshconfig.RateLimit{
		PerSource: &meshconfig.Bucket{Rate: 0.01, Burst: 3},
		Tools:     map[string]meshconfig.Bucket{"search": {Rate: 0.01, Burst: 1}},
	}})
	a, _ := e.client(false)
	var codes []int
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, "http://web.agents/", nil)
		resp, err := a.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("429 without a Retry-After: %q", ra)
			}
		}
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429]" {
		t.Errorf("5 requests of one caller with a burst of 3: %v", codes)
	}
	// Pod c calls the same agent: its own bucket.
	trC := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.c.AppDial(ctx, e.vip) }}
	t.Cleanup(trC.CloseIdleConnections)
	other := &http.Client{Transport: trC, Timeout: 10 * time.Second}
	if code, _, _ := webGet(t, other, "/", nil); code != 200 {
		t.Errorf("another caller: %d, want 200", code)
	}
	e.logs.wait(t, map[string]any{"msg": "request", "direction": "inbound", "status": float64(429)})

	// The tool's own limit, from a fresh caller's bucket (c's).
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search"}}`
	for i, want := range []int{200, 429} {
		resp, err := other.Post("http://web.agents/", "application/json", strings.NewReader(call))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("tools/call search %d: %d %s, want %d", i, resp.StatusCode, b, want)
		}
		if want == 429 && !strings.Contains(string(b), `"id":7`) || want == 429 && !strings.Contains(string(b), "Rate limit") {
			t.Errorf("the limited call's answer: %s; want a JSON-RPC error with id 7", b)
		}
	}
	m := e.node.rec.M
	if got := testutil.ToFloat64(m.Traffic.WithLabelValues("agents/web", "rate_limited")); got != 3 {
		t.Errorf("agentmesh_traffic_events_total rate_limited = %v, want 3", got)
	}
}

// opaqueGet sends one GET over a new connection to web's VIP from pod a
// and returns the connection, still open, and the answering server's
// name ("" and the error when the connection was refused).
func (e *httpEnv) opaqueGet() (net.Conn, string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.a.AppDial(ctx, e.vip)
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.agents\r\n\r\n"); err != nil {
		c.Close()
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(len("server-c GET web.agents 0"))))
	resp.Body.Close()
	if err != nil || len(b) == 0 {
		c.Close()
		return nil, "", fmt.Errorf("body %q: %w", b, err)
	}
	return c, strings.Fields(string(b))[0], nil
}

// TestTrafficPolicyOpaque: for opaque TCP the source tunnel applies the
// TrafficPolicy per connection: with one connection per endpoint allowed,
// two connections take the two endpoints and a third is refused (counted
// as overflow_max_connections), and a slot freed is taken again; an
// endpoint whose connects fail twice in a row is ejected (logged and
// counted) and no later connection tries it.
func TestTrafficPolicyOpaque(t *testing.T) {
	e := newHTTPEnvWith(t, "", func(o *NodeOptions) { o.HTTPPerRequest = false }, "uid-b", "uid-c")
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/conns", Breaker: &meshconfig.Breaker{MaxConnections: 1}})
	overflows := e.node.rec.M.Traffic.WithLabelValues("agents/web", "overflow_max_connections")
	var held []net.Conn
	seen := map[string]bool{}
	for range 2 {
		c, name, err := e.opaqueGet()
		if err != nil {
			t.Fatalf("connection under the limit: %v", err)
		}
		held = append(held, c)
		seen[name] = true
	}
	if len(seen) != 2 {
		t.Fatalf("two connections reached %v, want both endpoints", seen)
	}
	if c, name, err := e.opaqueGet(); err == nil {
		c.Close()
		t.Fatalf("a third connection was answered by %s, want it refused", name)
	}
	if got := testutil.ToFloat64(overflows); got != 1 {
		t.Errorf("overflow_max_connections counted %v, want 1", got)
	}
	held[0].Close()
	waitFor(t, "a freed slot taken again", func() bool {
		c, _, err := e.opaqueGet()
		if err == nil {
			held[0] = c
		}
		return err == nil
	})
	for _, c := range held {
		c.Close()
	}

	// b's app goes away: its connects fail until it is ejected.
	e.withTraffic(&meshconfig.TrafficPolicy{Name: "agents/eject", LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBRoundRobin},
		Outlier: &meshconfig.Outlier{ConsecutiveFailures: 2, BaseEjection: time.Hour, MaxEjectedPercent: 50}})
	e.srv["server"].Close()
	for range 10 {
		c, name, err := e.opaqueGet()
		if err != nil || name != "server-c" {
			t.Fatalf("with b's app gone: %q %v, want every connection failed over to server-c", name, err)
		}
		c.Close()
	}
	e.logs.wait(t, map[string]any{"msg": "endpoint ejected", "service": "agents/web", "policy": "agents/eject", "after": "failed connects"})
	if got := testutil.ToFloat64(e.node.rec.M.Traffic.WithLabelValues("agents/web", "ejection")); got != 1 {
		t.Errorf("ejections counted %v, want 1", got)
	}
	failovers := func() (n float64) {
		for _, reason := range []string{"refused", "status_503", "error", "unreachable", "timeout"} {
			n += testutil.ToFloat64(e.node.rec.M.ServiceRetries.WithLabelValues("agents/web", reason))
		}
		return n
	}
	before := failovers()
	for range 20 {
		c, _, err := e.opaqueGet()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n := failovers() - before; n != 0 {
		t.Errorf("%v connects failed over after the ejection, want none: the ejected endpoint was tried", n)
	}
}
