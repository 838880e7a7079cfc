package ztunnel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/podnet/podnettest"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// httpEnv is a fakeEnv with the per-request HTTP path on, a third mesh
// pod c, and Service agents/web (VIP 10.96.0.8, port 80 -> 8090,
// appProtocol http) whose endpoints are b and c, each running an HTTP
// server that answers with its name.
type httpEnv struct {
	*fakeEnv
	c      *podnettest.Pod
	vip    netip.AddrPort
	served map[string]*atomic.Int64
	srv    map[string]*http.Server
	slowC  atomic.Int64 // nanoseconds c waits before answering /
	failC  atomic.Bool  // c answers / with 503
}

func newHTTPEnv(t *testing.T, appProtocol string, endpoints ...string) *httpEnv {
	return newHTTPEnvWith(t, appProtocol, nil, endpoints...)
}

// newHTTPEnvWith is newHTTPEnv with more node options.
func newHTTPEnvWith(t *testing.T, appProtocol string, opt func(*NodeOptions), endpoints ...string) *httpEnv {
	e := &httpEnv{fakeEnv: newFakeEnv(t, func(o *NodeOptions) {
		o.HTTPPerRequest = true
		// As ztunnel runs by default: connections to a pod address
		// are sniffed, and HTTP goes per request too.
		o.Detect.Timeout = time.Second
		if opt != nil {
			opt(o)
		}
	})}
	e.c = e.net.AddPod("uid-c", true)
	ns, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.node.AddPod(handoff.Pod{UID: "uid-c", Name: "server-c", Namespace: "agents", IPs: []netip.Addr{e.c.IP}}, ns); err != nil {
		t.Fatal(err)
	}
	e.served = map[string]*atomic.Int64{"server": {}, "server-c": {}}
	e.srv = map[string]*http.Server{}
	for name, p := range map[string]*podnettest.Pod{"server": e.b, "server-c": e.c} {
		ln, err := p.AppListen(8090)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: e.app(name)}
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
		srv.Protocols = &protos
		e.srv[name] = srv
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	e.vip = netip.MustParseAddrPort("10.96.0.8:80")
	c := e.config(nil)
	c.Workloads = append(c.Workloads, workload("uid-c", "server-c", e.c.IP))
	var eps []meshconfig.Endpoint
	for _, uid := range endpoints {
		ip := map[string]netip.Addr{"uid-b": e.b.IP, "uid-c": e.c.IP}[uid]
		eps = append(eps, meshconfig.Endpoint{WorkloadUID: uid, IPs: []netip.Addr{ip}, Ready: true})
	}
	c.Services = []meshconfig.Service{{
		Name: "web", Namespace: "agents", VIPs: []netip.Addr{e.vip.Addr()},
		Ports:     []meshconfig.ServicePort{{Name: "http", Port: 80, TargetPort: 8090, Protocol: "TCP", AppProtocol: appProtocol}},
		Endpoints: eps,
	}}
	e.node.SetConfig(c)
	waitFor(t, "pod c set up", func() bool {
		e.node.mu.Lock()
		p := e.node.pods["uid-c"]
		e.node.mu.Unlock()
		st, _ := p.getStateOrNil()
		return st == stateReady
	})
	return e
}

// app is the HTTP server of pod name: / answers its name; /stream sends
// a chunk, then the next each time release gets a value; /upgrade
// switches to an echo protocol; /trailer sets a trailer.
func (e *httpEnv) app(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e.served[name].Add(1)
		if name == "server-c" {
			time.Sleep(time.Duration(e.slowC.Load()))
			if e.failC.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.Host, len(body))
	})
	mux.HandleFunc("/flaky", func(w http.ResponseWriter, r *http.Request) {
		// c fails every other request, before it reads the body; the
		// others get the body's length.
		if n := e.served[name].Add(1); name == "server-c" && n%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", name, r.Method, len(body))
	})
	mux.HandleFunc("/gaps", func(w http.ResponseWriter, r *http.Request) {
		// An event stream: n events, every apart (query parameters).
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		every, _ := time.ParseDuration(r.URL.Query().Get("every"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range n {
			if i > 0 {
				select {
				case <-time.After(every):
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			http.NewResponseController(w).Flush()
		}
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		// Half a body, then the app's connection breaks.
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("half"))
		w.(http.Flusher).Flush()
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // the app ends its connection after this answer
		fmt.Fprintf(w, "%s closes", name)
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		fmt.Fprintf(w, "%s %s", name, r.Proto)
		w.Header().Set("Grpc-Status", "0")
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) //nolint:errcheck // echo until the client closes
	})
	return mux
}

// client is an HTTP client of pod a whose connections go to the VIP and
// are counted.
func (e *httpEnv) client(h2 bool) (*http.Client, *atomic.Int64) {
	var dials atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		return e.a.AppDial(ctx, e.vip)
	}}
	if h2 {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		tr.Protocols = &protos
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &dials
}

func httpGet(t *testing.T, c *http.Client, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// TestHTTPPerRequest: the requests of one keep-alive app connection to a
// Service are balanced one by one over its endpoints, with the time to
// first byte as the latency (the slow endpoint gets few), and each gets
// its request line and metrics; the connection gets one access line.
func TestHTTPPerRequest(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b", "uid-c")
	e.slowC.Store(int64(50 * time.Millisecond))
	c, dials := e.client(false)
	const n = 20
	for i := range n {
		code, body, _ := httpGet(t, c, "http://web.agents/")
		if code != 200 || !strings.HasPrefix(body, "server") || !strings.HasSuffix(body, " GET web.agents 0") {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("the client dialed %d times, want its one keep-alive connection", d)
	}
	b, slow := e.served["server"].Load(), e.served["server-c"].Load()
	if b+slow != n || slow < 1 || b < n-5 {
		t.Errorf("server b served %d, slow server c %d of %d requests on one connection: want both tried, the fast one nearly all", b, slow, n)
	}
	m := e.node.rec.M
	l := []string{"source", "client", "agents", "server", "agents", "agents/web", "200", "http1", "", "", ""}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(l...)); got != float64(b) {
		t.Errorf("agentmesh_requests_total to server b = %v, want %d", got, b)
	}
	// The destination serves the stream per request too (the source said
	// so on the CONNECT): it counts the same requests, per endpoint.
	ld := []string{"destination", "client", "agents", "server", "agents", "unknown", "200", "http1", "", "", ""}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(ld...)); got != float64(b) {
		t.Errorf("destination agentmesh_requests_total at server b = %v, want %d", got, b)
	}
	if got := testutil.CollectAndCount(m.RequestDuration); got != 4 {
		t.Errorf("%d request duration series, want 4 (one per endpoint, as source and as destination)", got)
	}
	line := e.logs.wait(t, map[string]any{"msg": "request", "direction": "outbound", "dst_service": "agents/web",
		"dst_workload": "agents/server-c", "method": "GET", "path": "/", "status": float64(200), "app_protocol": "http1", "mtls": true})
	if line["upstream_addr"] != netip.AddrPortFrom(e.c.IP, 8090).String() || line["dst_identity"] != spiffeOf("server-c") {
		t.Errorf("request line to c: %v", line)
	}
	// The app's headers arrive as sent: nothing added, nothing decoded.
	for _, sent := range []http.Header{
		{"X-Forwarded-For": {"192.0.2.7"}, "Accept-Encoding": {"gzip"}, "X-Agent": {"planner"}},
		{"Accept-Encoding": {"identity"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://web.agents/headers", nil)
		req.Header = sent.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got http.Header
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range sent {
			if !slices.Equal(got[k], v) {
				t.Errorf("header %s arrived as %q, sent %q", k, got[k], v)
			}
		}
		if _, ok := sent["X-Forwarded-For"]; !ok && got.Get("X-Forwarded-For") != "" {
			t.Errorf("X-Forwarded-For %q added", got.Get("X-Forwarded-For"))
		}
	}
	c.CloseIdleConnections()
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "dst_addr": e.vip.String(), "requests": float64(n + 2), "result": "ok"})
	// The node keeps them (--recent-requests, 512 by default), newest
	// first.
	kept := slices.DeleteFunc(e.node.rec.Recent("agents/client", 0), func(q debug.Request) bool { return q.Reporter != "source" })
	if len(kept) != n+2 || kept[0].Path != "/headers" || kept[n+1].Path != "/" {
		t.Fatalf("kept %d requests from the client: %+v; want %d, /headers first", len(kept), kept, n+2)
	}
	if q := kept[n+1]; q.Reporter != "source" || q.Service != "agents/web" || q.Status != 200 || q.Result != "ok" ||
		q.Protocol != "http1" || q.Attempts < 1 || q.Source.Identity != spiffeOf("client") || q.Destination.Pod == "" {
		t.Errorf("oldest kept request: %+v", q)
	}
}

// TestHTTPPerRequestStreams: a chunked response arrives chunk by chunk
// (nothing is buffered to its end), an upgraded connection carries bytes
// both ways, and HTTP/2 (h2c) requests multiplexed on one connection get
// their trailers.
func TestHTTPPerRequestStreams(t *testing.T) {
	t.Run("chunked", func(t *testing.T) {
		e := newHTTPEnv(t, "http", "uid-b")
		release := make(chan struct{})
		ln, err := e.b.AppListen(8091)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				if i < 2 {
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
				}
			}
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8091))
		if err != nil {
			t.Fatal(err)
		}
		// To b's pod address (no Service): sniffed as HTTP/1.1.
		fmt.Fprint(conn, "GET /events HTTP/1.1\r\nHost: b\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		for i := range 3 {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := rd.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("event %d: %q, %v (a chunk held back until the next?)", i, line, err)
			}
			rd.ReadString('\n')
			if i < 2 {
				release <- struct{}{}
			}
		}
	})
	t.Run("duplex", func(t *testing.T) {
		// The app answers before it has read the request's body: the
		// answer's start reaches the client while the body is still
		// coming, and the rest of the body still reaches the app. (The
		// tunnels' HTTP servers used to read what was left of the body
		// and close it as soon as the response started: here the answer
		// waited for the body, and with a whole body the upstream leg
		// failed now and then, cutting the response.)
		e := newHTTPEnv(t, "http", "uid-b")
		ln, err := e.b.AppListen(8092)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if err := rc.EnableFullDuplex(); err != nil {
				t.Error(err)
			}
			fmt.Fprint(w, "started\n")
			rc.Flush()
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "body %q %v\n", b, err)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8092))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "POST /duplex HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nfirst")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("the answer's start before the whole body was sent: %v", err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		if line, err := rd.ReadString('\n'); line != "started\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		fmt.Fprint(conn, "-half")
		if line, err := rd.ReadString('\n'); line != "body \"first-half\" <nil>\n" {
			t.Fatalf("the app got %q, %v; want the whole body", line, err)
		}
		e.logs.wait(t, map[string]any{"msg": "request", "path": "/duplex", "status": float64(200), "result": "ok"})
	})
	t.Run("upgrade", func(t *testing.T) {
		e := newHTTPEnv(t, "http", "uid-b")
		conn, err := e.dial(e.a, e.vip)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(conn, "GET /upgrade HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v, %v", resp, err)
		}
		for _, msg := range []string{"hello", "again"} {
			fmt.Fprint(conn, msg)
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
				t.Fatalf("echo over the upgraded connection: %q, %v", buf, err)
			}
		}
		conn.Close()
		e.logs.wait(t, map[string]any{"msg": "request", "path": "/upgrade", "status": float64(101)})
	})
	t.Run("h2c", func(t *testing.T) {
		e := newHTTPEnv(t, "kubernetes.io/h2c", "uid-b", "uid-c")
		c, dials := e.client(true)
		httpGet(t, c, "http://web/") // one connection up before the burst
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				resp, err := c.Get("http://web/trailer")
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if !strings.HasSuffix(string(b), "HTTP/2.0") || resp.Trailer.Get("Grpc-Status") != "0" || resp.ProtoMajor != 2 {
					t.Errorf("h2c: %q proto %s trailer %v", b, resp.Proto, resp.Trailer)
				}
			})
		}
		wg.Wait()
		if d := dials.Load(); d != 1 {
			t.Errorf("%d client connections, want 1 (multiplexed)", d)
		}
		l := []string{"source", "client", "agents", "server", "agents", "agents/web", "200", "http2", "", "", ""}
		lc := append([]string(nil), l...)
		lc[3] = "server-c"
		m := e.node.rec.M
		if got := testutil.ToFloat64(m.Requests.WithLabelValues(l...)) + testutil.ToFloat64(m.Requests.WithLabelValues(lc...)); got != 9 {
			t.Errorf("agentmesh_requests_total http2 = %v, want 9", got)
		}
	})
}

// TestHTTPPerRequestErrors: a Service with no ready endpoint answers 503
// and the connection stays usable; a try on an endpoint that refuses
// (nothing listens on c's port) is made again on another; a malformed
// request gets 400 and reaches no app.
func TestHTTPPerRequestErrors(t *testing.T) {
	t.Run("no endpoint", func(t *testing.T) {
		e := newHTTPEnv(t, "http")
		c, dials := e.client(false)
		for range 2 {
			code, _, h := httpGet(t, c, "http://web/")
			if code != http.StatusServiceUnavailable || h.Get("Agentmesh-Error") != "no_endpoint" {
				t.Fatalf("no endpoint: %d %v", code, h)
			}
		}
		if d := dials.Load(); d != 1 {
			t.Errorf("%d dials: the 503 closed the app's connection", d)
		}
		e.logs.wait(t, map[string]any{"msg": "request", "status": float64(503)})
	})
	t.Run("failover", func(t *testing.T) {
		e := newHTTPEnv(t, "http", "uid-b", "uid-c")
		e.srv["server-c"].Close() // c's port refuses: its tunnel answers the CONNECT 503
		c, _ := e.client(false)
		for i := range 6 {
			code, body, _ := httpGet(t, c, "http://web/")
			if code != 200 || !strings.HasPrefix(body, "server GET") {
				t.Fatalf("request %d: %d %q, want b's answer", i, code, body)
			}
		}
		line := e.logs.wait(t, map[string]any{"msg": "request", "status": float64(200), "attempts": float64(2)})
		if line["upstream_addr"] != netip.AddrPortFrom(e.b.IP, 8090).String() {
			t.Errorf("the retried request's line: %v", line)
		}
	})
	t.Run("rollout", func(t *testing.T) {
		// The only endpoint refuses (its app is gone); a request that
		// tried it waits for the backoff or a new config, and the config
		// that replaces it with b sends the next try there at once.
		f := transport.DefaultFailover
		f.BackoffBase, f.BackoffMax = time.Minute, time.Minute // only the new config ends the wait
		e := newHTTPEnvWith(t, "http", func(o *NodeOptions) { o.Failover = f }, "uid-c")
		e.srv["server-c"].Close()
		c, _ := e.client(false)
		type result struct {
			code int
			body string
		}
		done := make(chan result, 1)
		go func() {
			resp, err := c.Get("http://web/")
			if err != nil {
				done <- result{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- result{resp.StatusCode, string(b)}
		}()
		waitFor(t, "the request's try on c", func() bool {
			idx := e.node.Index()
			s := idx.Service("agents", "web")
			return s != nil && e.node.debugService(idx, s).Endpoints[0].Picks > 0
		})
		cfg := e.config(nil)
		cfg.Workloads = append(cfg.Workloads, e.node.Index().Config.Workloads[2:]...)
		cfg.Services = slices.Clone(e.node.Index().Config.Services) // the config in force is shared
		cfg.Services[0].Endpoints = []meshconfig.Endpoint{{WorkloadUID: "uid-b", IPs: []netip.Addr{e.b.IP}, Ready: true}}
		e.node.SetConfig(cfg)
		r := <-done
		if r.code != 200 || !strings.HasPrefix(r.body, "server GET") {
			t.Fatalf("request during the rollout: %d %q, want b's answer", r.code, r.body)
		}
		line := e.logs.wait(t, map[string]any{"msg": "request", "direction": "outbound", "status": float64(200)})
		if line["attempts"] != float64(2) || line["upstream_addr"] != netip.AddrPortFrom(e.b.IP, 8090).String() {
			t.Errorf("request line %v: want c tried once, then b", line)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		e := newHTTPEnv(t, "http", "uid-b")
		conn, err := e.dial(e.a, e.vip)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "this is not http\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("malformed request: %v, %v; want 400", resp, err)
		}
		if n := e.served["server"].Load(); n != 0 {
			t.Errorf("the app served %d requests", n)
		}
	})
	t.Run("response cut", func(t *testing.T) {
		// The app's connection breaks in the middle of a body: the caller
		// never gets a whole answer (a 502, or a body cut short), and the
		// request is still recorded, with why, by the tunnel whose
		// upstream broke (the destination's, serving per request too).
		e := newHTTPEnv(t, "http", "uid-b")
		c, _ := e.client(false)
		resp, err := c.Get("http://web/cut")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				t.Fatalf("a response the app cut arrived whole: %v %v", resp.Status, resp.Header)
			}
		}
		line := e.logs.wait(t, map[string]any{"msg": "request", "direction": "inbound", "path": "/cut"})
		if r, _ := line["result"].(string); !strings.HasPrefix(r, "response aborted: upstream body: unexpected EOF") {
			t.Errorf("the cut request's line: %v", line)
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		// Headers past net/http's 1 MiB limit get 431, never reach the
		// app, and the tunnel goes on serving the next client.
		e := newHTTPEnv(t, "http", "uid-b")
		conn, err := e.dial(e.a, e.vip)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2<<20))
		}()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized headers: %v, %v; want 431", resp, err)
		}
		conn.Close()
		if n := e.served["server"].Load(); n != 0 {
			t.Errorf("the app served %d requests", n)
		}
		c, _ := e.client(false)
		if code, body, _ := httpGet(t, c, "http://web.agents/"); code != 200 {
			t.Errorf("the next client: %d %q", code, body)
		}
	})
}
