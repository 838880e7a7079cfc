package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConnectLoopback(t *testing.T) {
	var accepted countingHandler
	addr := startServer(t, accepted.wrap(serveEcho))
	cfg := ConnectConfig{To: addr, Concurrency: 4, Size: 1024, Duration: 200 * time.Millisecond, Timeout: 5 * time.Second}
	r, err := RunConnect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connections == 0 || r.Errors != 0 || r.FirstError != "" || r.Concurrency != 4 {
		t.Fatalf("got %+v, want connections, no errors", r)
	}
	if got := accepted.n(); got != r.Connections {
		t.Errorf("server accepted %d connections, client counted %d: want one echo per connection", got, r.Connections)
	}
	if r.Seconds < 0.2 || r.PerSecond <= 0 || r.PerSecond > float64(r.Connections)/0.2 {
		t.Errorf("rate %v/s over %vs for %d connections", r.PerSecond, r.Seconds, r.Connections)
	}
	if !(0 < r.P50us && r.P50us <= r.P90us && r.P90us <= r.P99us && r.P99us <= r.Maxus) {
		t.Errorf("percentiles not ordered: %+v", r)
	}
}

func TestConnectCountsBadEchoes(t *testing.T) {
	addr := startServer(t, func(c net.Conn) error {
		p, err := readFrame(c, nil)
		if err != nil {
			return err
		}
		p[len(p)-1]++
		return writeFrame(c, p)
	})
	cfg := ConnectConfig{To: addr, Concurrency: 2, Size: 64, Duration: 50 * time.Millisecond, Timeout: 5 * time.Second}
	r, err := RunConnect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connections != 0 || r.Errors == 0 || !strings.Contains(r.FirstError, "bad echo") {
		t.Errorf("got %+v, want only errors, bad echo", r)
	}
}

func TestConnectStopsOnCancel(t *testing.T) {
	addr := startServer(t, serveEcho)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	cfg := ConnectConfig{To: addr, Concurrency: 2, Size: 64, Duration: time.Minute, Timeout: time.Second}
	start := time.Now()
	if _, err := RunConnect(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunConnect after cancel = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("RunConnect took %v after its context ended", d)
	}
}

func TestConnectConfigLimits(t *testing.T) {
	ok := ConnectConfig{To: "x:1", Concurrency: 8, Size: 1024, Duration: 5 * time.Second, Timeout: 5 * time.Second}
	if err := ok.check(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
	for name, mut := range map[string]func(*ConnectConfig){
		"no address":     func(c *ConnectConfig) { c.To = "" },
		"no concurrency": func(c *ConnectConfig) { c.Concurrency = 0 },
		"tiny size":      func(c *ConnectConfig) { c.Size = MinFrame - 1 },
		"long duration":  func(c *ConnectConfig) { c.Duration = time.Hour },
		"no timeout":     func(c *ConnectConfig) { c.Timeout = 0 },
	} {
		c := ok
		mut(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}

func TestClientConnectPrintsJSON(t *testing.T) {
	echo := startServer(t, serveEcho)
	var out bytes.Buffer
	if err := Client(context.Background(), []string{"connect", "--to", echo, "--concurrency", "2", "--duration", "50ms"}, &out); err != nil {
		t.Fatal(err)
	}
	var r ConnectResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Mode != "connect" || r.Connections == 0 {
		t.Errorf("connect printed %q (%v), want connections", out.String(), err)
	}
	if err := Client(context.Background(), []string{"connect", "--to", echo, "--concurrency", "0"}, &out); err == nil {
		t.Error("connect with --concurrency 0 succeeded")
	}
}

// countingHandler counts the connections its wrapped handler served.
type countingHandler struct{ count atomic.Int64 }

func (h *countingHandler) wrap(handle func(net.Conn) error) func(net.Conn) error {
	return func(c net.Conn) error {
		h.count.Add(1)
		return handle(c)
	}
}

func (h *countingHandler) n() int { return int(h.count.Load()) }
