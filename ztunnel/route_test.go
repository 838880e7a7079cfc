package ztunnel

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// withRoutes sets the config of e with Services agents/web-v1 (endpoint
// b) and agents/web-v2 (endpoint c), port 80 -> 8090, and routes on
// agents/web.
func (e *httpEnv) withRoutes(routes ...meshconfig.Route) {
	e.t.Helper()
	c := *e.node.Index().Config
	c.Services = append([]meshconfig.Service(nil), c.Services...)
	web := &c.Services[0]
	web.Routes = routes
	for _, v := range []struct {
		name string
		uid  string
		ip   netip.Addr
	}{{"web-v1", "uid-b", e.b.IP}, {"web-v2", "uid-c", e.c.IP}} {
		c.Services = append(c.Services, meshconfig.Service{
			Name: v.name, Namespace: "agents", VIPs: []netip.Addr{netip.MustParseAddr("10.96.1." + v.name[len(v.name)-1:])},
			Ports:     []meshconfig.ServicePort{{Name: "http", Port: 80, TargetPort: 8090, Protocol: "TCP", AppProtocol: "http"}},
			Endpoints: []meshconfig.Endpoint{{WorkloadUID: v.uid, IPs: []netip.Addr{v.ip}, Ready: true}},
		})
	}
	if err := c.Validate(); err != nil {
		e.t.Fatal(err)
	}
	e.node.SetConfig(&c)
}

func backends(weights ...uint32) []meshconfig.Backend {
	var out []meshconfig.Backend
	for i, w := range weights {
		out = append(out, meshconfig.Backend{Service: "agents/web-v" + string(rune('1'+i)), Port: 80, Weight: w})
	}
	return out
}

// TestHTTPRoutes: requests to a Service follow its routes (GAMMA): a
// header match sends them to v2 only; the default rule splits them
// 90/10 between v1 and v2 by weight, and a new config's weights apply to
// the next request on the same connection; a route's request timeout
// answers 504, a backend that does not exist 500.
func TestHTTPRoutes(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b", "uid-c")
	e.withRoutes(
		meshconfig.Route{Name: "agents/web-ab", Kind: "HTTPRoute",
			Match:    meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/", Headers: []meshconfig.ValueMatch{{Name: "x-variant", Value: "b"}}},
			Backends: backends(0, 1)},
		meshconfig.Route{Name: "agents/web-slow", Kind: "HTTPRoute", Match: meshconfig.RouteMatch{PathType: meshconfig.PathExact, Path: "/slow"},
			Backends: backends(0, 1), Timeout: 200 * time.Millisecond},
		meshconfig.Route{Name: "agents/web-gone", Kind: "HTTPRoute", Match: meshconfig.RouteMatch{PathType: meshconfig.PathExact, Path: "/gone"},
			Backends: []meshconfig.Backend{{Service: "agents/nowhere", Port: 80, Weight: 1}}},
		meshconfig.Route{Name: "agents/web-canary", Kind: "HTTPRoute", Rule: 1,
			Match: meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/"}, Backends: backends(90, 10)},
	)
	c, _ := e.client(false)
	count := func(n int, h http.Header) (v1, v2 int) {
		t.Helper()
		for i := range n {
			req, _ := http.NewRequest(http.MethodGet, "http://web.agents/", nil)
			req.Header = h
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case strings.HasPrefix(string(b), "server-c "):
				v2++
			case strings.HasPrefix(string(b), "server "):
				v1++
			default:
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}
		return v1, v2
	}
	idx := e.node.Index()
	ds := e.node.debugService(idx, idx.Service("agents", "web"))
	var matches []string
	for _, r := range ds.Routes {
		matches = append(matches, r.Match)
	}
	if strings.Join(matches, " | ") != "/* x-variant=b | /slow | /gone | /*" {
		t.Errorf("/debug/services routes' matches: %q", matches)
	}
	if v1, v2 := count(50, http.Header{"X-Variant": {"b"}}); v1 != 0 || v2 != 50 {
		t.Errorf("with the A/B header: v1 %d, v2 %d; want all 50 on v2", v1, v2)
	}
	const n = 2000
	v1, v2 := count(n, nil)
	// 10 % of 2000 is 200, with a standard deviation of about 13.4.
	if v2 < 140 || v2 > 260 {
		t.Errorf("90/10 canary over %d requests: v1 %d, v2 %d", n, v1, v2)
	}
	t.Logf("90/10 canary over %d requests: v1 %d (%.1f %%), v2 %d (%.1f %%)", n, v1, 100*float64(v1)/n, v2, 100*float64(v2)/n)

	e.withRoutes(meshconfig.Route{Name: "agents/web-canary", Kind: "HTTPRoute", Backends: backends(0, 1)})
	if v1, v2 := count(20, nil); v1 != 0 || v2 != 20 {
		t.Errorf("after the weights moved to v2 only: v1 %d, v2 %d on the same connection", v1, v2)
	}

	e.withRoutes(
		meshconfig.Route{Name: "agents/web-slow", Kind: "HTTPRoute", Match: meshconfig.RouteMatch{PathType: meshconfig.PathExact, Path: "/"},
			Backends: backends(0, 1), Timeout: 200 * time.Millisecond},
	)
	e.slowC.Store(int64(2 * time.Second))
	start := time.Now()
	resp, err := c.Get("http://web.agents/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Agentmesh-Error") != "request_timeout" || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("past the route's request timeout: %d %q after %v; want 504 request_timeout at about 200ms",
			resp.StatusCode, resp.Header.Get("Agentmesh-Error"), time.Since(start))
	}
	e.withRoutes(
		meshconfig.Route{Name: "agents/web-slow", Kind: "HTTPRoute", Backends: backends(0, 1), BackendTimeout: 200 * time.Millisecond},
	)
	start = time.Now()
	code, _, h := httpGet(t, c, "http://web.agents/")
	if code != http.StatusGatewayTimeout || h.Get("Agentmesh-Error") != "backend_timeout" || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("past the route's backend request timeout: %d %q after %v; want 504 backend_timeout at about 200ms",
			code, h.Get("Agentmesh-Error"), time.Since(start))
	}
	e.slowC.Store(0)
	e.withRoutes(meshconfig.Route{Name: "agents/web-gone", Kind: "HTTPRoute",
		Backends: []meshconfig.Backend{{Service: "agents/nowhere", Port: 80, Weight: 1}}})
	code, _, h = httpGet(t, c, "http://web.agents/")
	if code != http.StatusInternalServerError || h.Get("Agentmesh-Error") != "no_backend" {
		t.Errorf("a route to a Service that does not exist: %d %q; want 500 no_backend", code, h.Get("Agentmesh-Error"))
	}
	e.logs.wait(t, map[string]any{"msg": "request", "direction": "outbound", "status": float64(504)})
}

// TestHTTPRouteRetry: a route that retries 503 tries a POST that failed
// (before the app read its body) again, body and all, and the client
// sees none fail; without the route's retry, a POST that reached the app
// and failed is not tried again (the app counts them).
func TestHTTPRouteRetry(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b", "uid-c")
	v2 := backends(0, 1) // c alone, which fails every other request
	e.withRoutes(meshconfig.Route{Name: "agents/web", Kind: "HTTPRoute", Backends: v2,
		Retry: &meshconfig.Retry{Codes: []int{503}, Attempts: 2, Backoff: time.Millisecond}})
	c, _ := e.client(false)
	const n = 100
	post := func() (int, string) {
		resp, err := c.Post("http://web.agents/flaky", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := range n {
		if code, body := post(); code != 200 || body != "server-c POST 5" {
			t.Fatalf("POST %d with retries: %d %q", i, code, body)
		}
	}
	if got := e.served["server-c"].Load(); got != 2*n {
		t.Errorf("with retries c served %d tries for %d POSTs, want %d (each failed once, then succeeded)", got, n, 2*n)
	}

	e.withRoutes(meshconfig.Route{Name: "agents/web", Kind: "HTTPRoute", Backends: v2})
	e.served["server-c"].Store(0)
	var got503 int
	for range n {
		if code, _ := post(); code == http.StatusServiceUnavailable {
			got503++
		}
	}
	if got := e.served["server-c"].Load(); got != n || got503 != n/2 {
		t.Errorf("without the route's retry: c served %d tries for %d POSTs and the client got %d 503s; want %d and %d (none tried again)",
			got, n, got503, n, n/2)
	}
}
