package meshlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// startEcho serves echo on a loopback port until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveEcho(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo server: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestSend(t *testing.T) {
	addr := startEcho(t)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"app", "send", "--to", addr, "--payload", "ping-123"}, &out); err != nil {
		t.Fatalf("send: %v", err)
	}
	var res SendResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("decode %q: %v", out.String(), err)
	}
	if !res.EchoOK || res.Bytes != len("ping-123") || res.To != addr || res.LatencyMS <= 0 {
		t.Errorf("unexpected result %+v", res)
	}
}

func TestSendFailsWithoutServer(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	var out bytes.Buffer
	err := Run(context.Background(), []string{"app", "send", "--to", addr, "--timeout", "2s"}, &out)
	if err == nil || !strings.Contains(out.String(), `"error"`) {
		t.Errorf("send to closed port: err=%v out=%s", err, out.String())
	}
}

func TestStream(t *testing.T) {
	addr := startEcho(t)
	var out bytes.Buffer
	err := Run(context.Background(), []string{"app", "stream", "--to", addr, "--duration", "300ms", "--interval", "20ms"}, &out)
	if err != nil {
		t.Fatalf("stream: %v (%s)", err, out.String())
	}
	var st StreamStats
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Sent < 5 || st.Echoed != st.Sent || st.BrokenAt != 0 || st.Seconds < 0.3 {
		t.Errorf("unexpected stats %+v", st)
	}
}

// TestStreamReportsBreak: a server that echoes three lines and then closes.
func TestStreamReportsBreak(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for range 3 {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(line))
		}
	}()
	var out bytes.Buffer
	err = Run(context.Background(), []string{"app", "stream", "--to", ln.Addr().String(), "--duration", "5s", "--interval", "10ms"}, &out)
	if err == nil {
		t.Fatalf("stream did not fail: %s", out.String())
	}
	var st StreamStats
	if jerr := json.Unmarshal(out.Bytes(), &st); jerr != nil {
		t.Fatal(jerr)
	}
	if st.BrokenAt != 4 || st.Echoed != 3 {
		t.Errorf("stats %+v, want broken at message 4 after 3 echoes", st)
	}
}

func TestHTTPAgentCall(t *testing.T) {
	callee := httptest.NewServer(agentHandler("data-validator"))
	defer callee.Close()
	caller := httptest.NewServer(agentHandler("planner"))
	defer caller.Close()
	resp, err := http.Get(caller.URL + "/call?to=" + url.QueryEscape(callee.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res CallResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	var reply AgentReply
	if err := json.Unmarshal(res.Reply, &reply); err != nil {
		t.Fatalf("reply %s: %v", res.Reply, err)
	}
	if resp.StatusCode != 200 || res.Status != 200 || res.From != "planner" || reply.Agent != "data-validator" || reply.Remote == "" {
		t.Errorf("call: status %d, result %+v, reply %+v", resp.StatusCode, res, reply)
	}
	bad, err := http.Get(caller.URL + "/call?to=ftp://x")
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode != http.StatusBadRequest {
		t.Errorf("bad target: status %d", bad.StatusCode)
	}
	// An answer from the caller's tunnel (Agentmesh-Error: a refusal by
	// policy, no endpoint) is a failed call, as a refused connect is.
	mesh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Agentmesh-Error", "denied")
		http.Error(w, "agentmesh: Forbidden", http.StatusForbidden)
	}))
	defer mesh.Close()
	refused, err := http.Get(caller.URL + "/call?to=" + url.QueryEscape(mesh.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Body.Close()
	var rr CallResult
	if err := json.NewDecoder(refused.Body).Decode(&rr); err != nil {
		t.Fatal(err)
	}
	if refused.StatusCode != http.StatusBadGateway || rr.Status != 403 || !strings.Contains(rr.Error, "the mesh answered 403 (denied)") {
		t.Errorf("call the mesh refused: status %d, result %+v", refused.StatusCode, rr)
	}
}

// TestHTTPAgentCallsSpread: /calls with to repeated sends each call to
// one of the targets at random (the no-mesh baseline of the balancing
// benchmark): both answer, together every call.
func TestHTTPAgentCallsSpread(t *testing.T) {
	a := httptest.NewServer(agentHandler("a"))
	defer a.Close()
	b := httptest.NewServer(agentHandler("b"))
	defer b.Close()
	caller := httptest.NewServer(agentHandler("planner"))
	defer caller.Close()
	resp, err := http.Get(caller.URL + "/calls?n=200&to=" + url.QueryEscape(a.URL+"/") + "&to=" + url.QueryEscape(b.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res CallsResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	if res.Status[200] != 200 || res.By["a"]+res.By["b"] != 200 || res.By["a"] < 50 || res.By["b"] < 50 || res.Connections != 2 {
		t.Errorf("calls over two targets: %+v, want 200 answers spread over both, one connection each", res)
	}
	bad, err := http.Get(caller.URL + "/calls?n=2&to=" + url.QueryEscape(a.URL+"/") + "&to=ftp://x")
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad second target: status %d, want 400", bad.StatusCode)
	}
}

func TestAppHTTPStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"app", "http", "--listen", "127.0.0.1:0"}, &bytes.Buffer{}) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("app http: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("app http did not stop")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"app"}, {"app", "send"}, {"app", "dialer"}, {"app", "dialer", "--to", "x:1", "--interval", "0s"}, {"demo", "--nodes", "1"}} {
		if err := Run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("Run(%q): no error", args)
		}
	}
}

func TestStreamProgress(t *testing.T) {
	addr := startEcho(t)
	var out bytes.Buffer
	err := Run(context.Background(), []string{"app", "stream", "--to", addr, "--duration", "100ms", "--interval", "20ms", "--progress"}, &out)
	if err != nil {
		t.Fatalf("stream: %v (%s)", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var first, last StreamStats
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[1]), &last) != nil {
		t.Fatalf("want two JSON lines, got %q", out.String())
	}
	if first.Echoed != 1 || last.Echoed < 2 || last.Seconds < 0.1 || first.Seconds >= last.Seconds {
		t.Errorf("progress %+v, final %+v", first, last)
	}
}

func TestDialer(t *testing.T) {
	addr := startEcho(t)
	var out bytes.Buffer
	err := Run(context.Background(), []string{"app", "dialer", "--to", addr, "--interval", "10ms", "--duration", "200ms"}, &out)
	if err != nil {
		t.Fatalf("dialer: %v (%s)", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var sum DialSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for _, line := range lines[:len(lines)-1] {
		var a DialAttempt
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("attempt line %q: %v", line, err)
		}
		if !a.OK || a.Error != "" || a.MS <= 0 || !a.At.After(last) || !strings.HasPrefix(a.Local, "127.0.0.1:") {
			t.Errorf("attempt %+v (previous at %s)", a, last)
		}
		last = a.At
	}
	if n := len(lines) - 1; sum.Attempts != n || sum.OK != n || sum.Failed != 0 || n < 5 || sum.To != addr {
		t.Errorf("%d attempt lines, summary %+v", n, sum)
	}
}

// TestDialerReportsFailures: three connections work, then the server goes
// away and the next ones fail, each reported with its error.
func TestDialerReportsFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveEcho(srvCtx, ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []DialAttempt
	sum, err := dialLoop(ctx, ln.Addr().String(), time.Millisecond, time.Second, func(a DialAttempt) error {
		got = append(got, a)
		if len(got) == 3 {
			stopServer()
			if err := <-served; err != nil {
				t.Errorf("echo server: %v", err)
			}
		}
		if len(got) == 6 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range got {
		if wantOK := i < 3; a.OK != wantOK || (a.Error == "") != wantOK || a.At.IsZero() {
			t.Errorf("attempt %d: %+v, want ok=%v", i+1, a, wantOK)
		}
	}
	if sum.Attempts != 6 || sum.OK != 3 || sum.Failed != 3 {
		t.Errorf("summary %+v", sum)
	}
}

// TestDialerStopIsNotAFailure: a stop during a connection lets it finish.
func TestDialerStopIsNotAFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		cancel() // the dialer is told to stop while it waits for the echo
		_, _ = c.Write(buf[:n])
	}()
	sum, err := dialLoop(ctx, ln.Addr().String(), time.Millisecond, 5*time.Second, func(DialAttempt) error { return nil })
	if err != nil || sum.Attempts != 1 || sum.OK != 1 {
		t.Errorf("summary %+v, %v; want one good attempt", sum, err)
	}
}
