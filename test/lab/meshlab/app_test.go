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
	if st.Sent < 5 || st.Echoed != st.Sent || st.BrokenAt != 0 {
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
	for _, args := range [][]string{nil, {"bogus"}, {"app"}, {"app", "send"}, {"demo", "--nodes", "1"}} {
		if err := Run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("Run(%q): no error", args)
		}
	}
}
