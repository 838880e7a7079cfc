package l7

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHTTPClientKeepAlive: every scheduled request is answered with its
// body echoed, on exactly the connections asked for.
func TestHTTPClientKeepAlive(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	r, err := RunHTTP(context.Background(), HTTPConfig{URL: srv.URL + EchoPath, Rate: 400, Conns: 3, Size: 100,
		Duration: 500 * time.Millisecond, Grace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Scheduled != 200 || r.Count != 200 || r.Errors != 0 || r.FirstError != "" {
		t.Errorf("%+v: want 200 requests answered", r)
	}
	if r.Dials < 1 || r.Dials > 3 {
		t.Errorf("%d connections dialed, want at most 3 (keep-alive)", r.Dials)
	}
	if r.P50us <= 0 || r.P50us > r.P99us || r.P99us > r.Maxus {
		t.Errorf("percentiles out of order: %+v", r)
	}
}

// TestHTTPClientCountsBadEchoes: an answer that is not the body echoed is
// an error, not a sample.
func TestHTTPClientCountsBadEchoes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("b"), 10))
	}))
	defer srv.Close()
	r, err := RunHTTP(context.Background(), HTTPConfig{URL: srv.URL, Rate: 100, Conns: 1, Size: 10,
		Duration: 200 * time.Millisecond, Grace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 0 || r.Errors != r.Scheduled || !strings.Contains(r.FirstError, "echoed") {
		t.Errorf("%+v: want every request an error", r)
	}
}

// TestHTTPClientLateServer: a server slower than the schedule makes
// requests wait for a connection; they count from their due time.
func TestHTTPClientLateServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte{})
	}))
	defer srv.Close()
	r, err := RunHTTP(context.Background(), HTTPConfig{URL: srv.URL, Rate: 200, Conns: 1, Size: 0,
		Duration: 200 * time.Millisecond, Grace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// 40 requests due within 200ms, served 20ms apart by one
	// connection: the last waits ~600ms.
	if r.Count != 40 || r.Behind < 30 || r.Maxus < 500_000 {
		t.Errorf("%+v: want 40 answered, most behind, the slowest counted from its due time", r)
	}
}

func TestMCPClient(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	r, err := RunMCP(context.Background(), MCPConfig{URL: srv.URL + MCPPath, Sessions: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Calls == 0 || r.Errors != 0 || r.PerSecond <= 0 || r.P50us <= 0 {
		t.Errorf("%+v: want calls answered, none failed", r)
	}
}

func TestClientFlags(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"http"}, {"http", "--url", "http://x/", "--rate", "0"}, {"mcp", "--url", ""}} {
		if err := Client(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: want an error", args)
		}
	}
}

func TestWriteTable(t *testing.T) {
	r := &Result{Options: Options{Rate: 500, Conns: 8, Size: 1024, Duration: 5 * time.Second, Sessions: 4, MCPDuration: 5 * time.Second},
		Rows: []Row{
			{Kind: Direct, HTTP: Run[HTTPResult]{Result: HTTPResult{Scheduled: 10, Count: 10, P50us: 100, P99us: 200}},
				MCP: Run[MCPResult]{Result: MCPResult{PerSecond: 1000, P50us: 300, P99us: 900}}},
			{Kind: L7, HTTP: Run[HTTPResult]{Result: HTTPResult{Scheduled: 10, Count: 10, P50us: 300, P99us: 500},
				Cost: &Cost{CPUPer1000: 150 * time.Millisecond, RSS: 40 << 20}, Src: 10},
				MCP: Run[MCPResult]{Result: MCPResult{PerSecond: 500, P50us: 600, P99us: 1800}, Cost: &Cost{}, Src: 500}},
		}}
	var b bytes.Buffer
	WriteTable(&b, r)
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"x3.00 (+200 µs)", "x2.50 (+300 µs)", "x0.50", "150ms", "40.0 MiB", "10/0", "per request in the source tunnel"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}
