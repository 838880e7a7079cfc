package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// startServer serves handle on a loopback port until the test ends.
func startServer(t *testing.T, handle func(net.Conn) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, handle) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestLatencyLoopback(t *testing.T) {
	addr := startServer(t, serveEcho)
	cfg := LatencyConfig{To: addr, Rate: 2000, Conns: 4, Size: 1024, Duration: 300 * time.Millisecond, Grace: 5 * time.Second}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Scheduled != 600 || s.Count != 600 || s.Errors != 0 || s.FirstError != "" {
		t.Errorf("got %+v, want 600 scheduled, 600 answered, no errors", s)
	}
	if !(0 < s.P50us && s.P50us <= s.P90us && s.P90us <= s.P99us && s.P99us <= s.Maxus) {
		t.Errorf("percentiles not ordered: %+v", s)
	}
}

// TestLatencyIncludesQueueing stalls the server for 300ms before the first
// echo. The open-loop client keeps sending, so the stall must show in every
// request sent during it (only lower bounds are checked).
func TestLatencyIncludesQueueing(t *testing.T) {
	const stall = 300 * time.Millisecond
	addr := startServer(t, func(c net.Conn) error {
		time.Sleep(stall)
		return serveEcho(c)
	})
	// 50 requests 10ms apart: requests 0..9 are sent by 90ms (plus timer
	// jitter) and answered after 300ms, so at least 10 of 50 samples are
	// >= 100ms, which puts p90 there.
	cfg := LatencyConfig{To: addr, Rate: 100, Conns: 1, Size: 64, Duration: 500 * time.Millisecond, Grace: 5 * time.Second}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 50 || s.Errors != 0 {
		t.Fatalf("got %+v, want 50 answered, no errors", s)
	}
	if s.Maxus < 200_000 || s.P90us < 100_000 {
		t.Errorf("stall hidden: max %vus (want >= 200ms), p90 %vus (want >= 100ms)", s.Maxus, s.P90us)
	}
}

// TestLatencyCountsBackpressureFromDueTime stops the server from reading
// for 600ms while the client sends 1 MiB requests for 500ms: the socket
// buffers fill after a few requests and writes block. Requests sent late
// must be measured from their due time, so every one of them waited at
// least 100ms (600ms stall - 500ms last due time). Measured from the
// actual send, most would look fast.
func TestLatencyCountsBackpressureFromDueTime(t *testing.T) {
	const stall = 600 * time.Millisecond
	addr := startServer(t, func(c net.Conn) error {
		time.Sleep(stall)
		return serveEcho(c)
	})
	cfg := LatencyConfig{To: addr, Rate: 100, Conns: 1, Size: MaxFrame, Duration: 500 * time.Millisecond, Grace: 10 * time.Second}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 50 || s.Errors != 0 {
		t.Fatalf("got %+v, want 50 answered, no errors", s)
	}
	if s.Behind == 0 || s.P50us < 100_000 {
		t.Errorf("got %+v, want requests sent behind schedule and p50 >= 100ms", s)
	}
}

func TestLatencyCountsUnansweredAsErrors(t *testing.T) {
	addr := startServer(t, func(c net.Conn) error {
		var buf []byte
		for range 3 {
			p, err := readFrame(c, buf)
			if err != nil {
				return err
			}
			if err := writeFrame(c, p); err != nil {
				return err
			}
		}
		return nil // closes after three echoes
	})
	cfg := LatencyConfig{To: addr, Rate: 200, Conns: 1, Size: 64, Duration: 100 * time.Millisecond, Grace: 5 * time.Second}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Scheduled != 20 || s.Count != 3 || s.Errors != 17 || s.FirstError == "" {
		t.Errorf("got %+v, want 20 scheduled, 3 answered, 17 errors and a first error", s)
	}
}

func TestLatencyRejectsCorruptEcho(t *testing.T) {
	addr := startServer(t, func(c net.Conn) error {
		var buf []byte
		for {
			p, err := readFrame(c, buf)
			if err != nil {
				return nil
			}
			p[len(p)-1]++
			if err := writeFrame(c, p); err != nil {
				return err
			}
		}
	})
	cfg := LatencyConfig{To: addr, Rate: 100, Conns: 2, Size: 32, Duration: 100 * time.Millisecond, Grace: 5 * time.Second}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 0 || s.Errors != 10 || !strings.Contains(s.FirstError, "bad echo") {
		t.Errorf("got %+v, want 0 answered, 10 errors, bad echo", s)
	}
}

func TestLatencyTimesOutSilentServer(t *testing.T) {
	addr := startServer(t, func(c net.Conn) error {
		_, err := io.Copy(io.Discard, c)
		return err
	})
	cfg := LatencyConfig{To: addr, Rate: 100, Conns: 1, Size: 32, Duration: 50 * time.Millisecond, Grace: 50 * time.Millisecond}
	s, err := RunLatency(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 0 || s.Errors != 5 || s.FirstError == "" {
		t.Errorf("got %+v, want 0 answered, 5 errors and a first error", s)
	}
}

func TestLatencyStopsOnCancel(t *testing.T) {
	addr := startServer(t, serveEcho)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	cfg := LatencyConfig{To: addr, Rate: 100, Conns: 2, Size: 64, Duration: time.Minute, Grace: time.Second}
	start := time.Now()
	if _, err := RunLatency(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunLatency after cancel = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("RunLatency took %v after its context ended", d)
	}
}

func TestLatencyConfigLimits(t *testing.T) {
	ok := LatencyConfig{To: "x:1", Rate: 500, Conns: 8, Size: 1024, Duration: 5 * time.Second, Grace: time.Second}
	if err := ok.check(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
	for name, mut := range map[string]func(*LatencyConfig){
		"no address":    func(c *LatencyConfig) { c.To = "" },
		"zero rate":     func(c *LatencyConfig) { c.Rate = 0 },
		"no conns":      func(c *LatencyConfig) { c.Conns = 0 },
		"tiny size":     func(c *LatencyConfig) { c.Size = MinFrame - 1 },
		"huge size":     func(c *LatencyConfig) { c.Size = MaxFrame + 1 },
		"long duration": func(c *LatencyConfig) { c.Duration = time.Hour },
		"too many reqs": func(c *LatencyConfig) { c.Rate, c.Duration = maxRate, maxDuration },
	} {
		c := ok
		mut(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}

func TestBulkLoopback(t *testing.T) {
	addr := startServer(t, serveDiscard)
	r, err := RunBulk(context.Background(), BulkConfig{To: addr, Bytes: 8<<20 + 3, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 8<<20+3 || r.Seconds <= 0 || r.Gbps <= 0 {
		t.Errorf("got %+v, want all 8 MiB + 3 bytes in positive time", r)
	}
}

func TestBulkFailsWhenServerStopsEarly(t *testing.T) {
	addr := startServer(t, func(c net.Conn) error {
		if _, err := readCount(c); err != nil {
			return err
		}
		_, err := drain(c, 1<<20)
		return err // closes after 1 MiB
	})
	_, err := RunBulk(context.Background(), BulkConfig{To: addr, Bytes: 64 << 20, Timeout: 30 * time.Second})
	if err == nil {
		t.Fatal("bulk reported success although the server stopped after 1 MiB")
	}
}

func TestClientPrintsJSON(t *testing.T) {
	echo := startServer(t, serveEcho)
	sink := startServer(t, serveDiscard)
	var out bytes.Buffer
	err := Client(context.Background(), []string{"latency", "--to", echo, "--rate", "200", "--conns", "2", "--duration", "100ms"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || s.Mode != "latency" || s.Count != 20 {
		t.Errorf("latency printed %q (%v), want a summary of 20 requests", out.String(), err)
	}
	out.Reset()
	if err := Client(context.Background(), []string{"bulk", "--to", sink, "--bytes", "1000"}, &out); err != nil {
		t.Fatal(err)
	}
	var b BulkResult
	if err := json.Unmarshal(out.Bytes(), &b); err != nil || b.Mode != "bulk" || b.Bytes != 1000 {
		t.Errorf("bulk printed %q (%v), want 1000 bytes", out.String(), err)
	}
	for _, args := range [][]string{nil, {"nope"}, {"latency", "--rate", "0", "--to", echo}, {"bulk"}, {"latency", "--bogus"}} {
		if err := Client(context.Background(), args, io.Discard); err == nil {
			t.Errorf("Client(%q) succeeded", args)
		}
	}
}

func TestServerFlags(t *testing.T) {
	for _, args := range [][]string{nil, {"--discard"}, {"--listen", ":1", "extra"}, {"--bogus"}} {
		if err := Server(context.Background(), args); err == nil {
			t.Errorf("Server(%q) succeeded", args)
		}
	}
}

// TestServeStopsOnCancel checks that cancelling closes the listener and
// open connections and leaves no goroutine behind.
func TestServeStopsOnCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, serveEcho) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := writeFrame(c, []byte("12345678")); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(c, nil); err != nil {
		t.Fatalf("echo before cancel: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read after cancel = %v, want EOF", err)
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	for range 100 {
		if runtime.NumGoroutine() <= want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%d goroutines, want at most %d", runtime.NumGoroutine(), want)
}
