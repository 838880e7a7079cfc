package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// requestsServer serves debug.RequestsPath from docs as a ztunnel does
// (workload and limit applied by answer) and remembers the queries.
type requestsServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	queries []string
}

func newRequestsServer(t *testing.T, answer func(workload string, limit int) debug.Requests) *requestsServer {
	s := &requestsServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != debug.RequestsPath {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.RawQuery)
		s.mu.Unlock()
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		json.NewEncoder(w).Encode(answer(r.URL.Query().Get("workload"), limit))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// TestRequestsCommand: meshctl requests reads two tunnels, one of them
// a real recorder's ring (the source's), the other the destination's,
// and merges their requests newest first.
func TestRequestsCommand(t *testing.T) {
	rec := record.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 16)
	f := flow.New(flow.Outbound, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
	f.SrcWorkload, f.DstWorkload, f.SrcID = planner, dv, spiffe.New("cluster.local", "agents", "planner")
	rec.Request(f, record.Request{Method: "POST", Path: "/mcp", Status: 200, Duration: 3 * time.Millisecond,
		MCPMethod: "tools/call", MCPTool: "search", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"})
	n1 := newRequestsServer(t, func(workload string, limit int) debug.Requests {
		return debug.Requests{Node: "n1", Capacity: 16, Requests: rec.Recent(workload, limit)}
	})
	now := time.Now()
	older := debug.Request{Time: now.Add(-time.Hour), Reporter: "destination", Source: debug.RequestPeer{Workload: "agents/planner"},
		Destination: debug.RequestPeer{Workload: "agents/data-validator"}, Method: "POST", Path: "/a2a", Status: 403,
		Result: "ok", DurationMillis: 0.4, A2AMethod: "tasks/cancel"}
	newer := debug.Request{Time: now.Add(time.Hour), Reporter: "destination", Source: debug.RequestPeer{Workload: "pay/billing"},
		Destination: debug.RequestPeer{Workload: "agents/data-validator"}, Method: "GET", Path: "/healthz", Status: 200,
		Result: "ok", DurationMillis: 1200}
	n2 := newRequestsServer(t, func(string, int) debug.Requests {
		return debug.Requests{Node: "n2", Capacity: 512, Requests: []debug.Request{newer, older}}
	})
	ctx := context.Background()
	var out, errOut bytes.Buffer
	args := []string{"requests", "--ztunnel", n1.srv.URL, "--ztunnel", n2.srv.URL, "--workload", "agents/planner", "--limit", "5", "-o", "json"}
	if code := run(ctx, args, &out, &errOut); code != 0 {
		t.Fatalf("meshctl %v: exit %d: %s", args, code, errOut.String())
	}
	var got debug.Requests
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out.String())
	}
	var order []string
	for _, q := range got.Requests {
		order = append(order, q.Node+" "+q.Path)
	}
	if strings.Join(order, ", ") != "n2 /healthz, n1 /mcp, n2 /a2a" || got.Capacity != 528 {
		t.Errorf("merged: %q, capacity %d; want n2 /healthz, n1 /mcp, n2 /a2a (newest first), 528", order, got.Capacity)
	}
	if q := got.Requests[1]; q.Reporter != "source" || q.Source.Workload != "agents/planner" || q.Destination.Workload != "agents/data-validator" ||
		q.Source.Identity != "spiffe://cluster.local/ns/agents/sa/planner" || q.MCPTool != "search" || q.DurationMillis != 3 {
		t.Errorf("the recorder's request: %+v", q)
	}
	for _, s := range []*requestsServer{n1, n2} {
		if len(s.queries) != 1 || s.queries[0] != "limit=5&workload=agents%2Fplanner" {
			t.Errorf("queries %q, want the workload and limit passed on", s.queries)
		}
	}

	// Text, limited after merging: the two newest.
	out.Reset()
	if code := run(ctx, []string{"requests", "--ztunnel", n1.srv.URL, "--ztunnel", n2.srv.URL, "--limit", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("meshctl requests: exit %d: %s", code, errOut.String())
	}
	t.Logf("text:\n%s", out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "TIME REPORTER FROM TO METHOD PATH/CALL STATUS DURATION TRACE" {
		t.Fatalf("text output:\n%s", out.String())
	}
	wantRows := [][]string{
		{newer.Time.Local().Format("15:04:05.000"), "destination", "pay/billing", "agents/data-validator", "GET", "/healthz", "200", "1.20s", "-"},
		{"source", "agents/planner", "agents/data-validator", "POST", "tools/call", "search", "200", "3.0ms", "4bf92f3577b34da6a3ce929d0e0e4736"},
	}
	for i, want := range wantRows {
		if got := strings.Join(strings.Fields(lines[i+1]), " "); !strings.Contains(got, strings.Join(want, " ")) {
			t.Errorf("row %d: %q, want %q", i+1, got, strings.Join(want, " "))
		}
	}
	if a2a := call(older); a2a != "tasks/cancel" {
		t.Errorf("call of an A2A request: %q", a2a)
	}
}

func TestRequestsCommandErrors(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"requests", "--workload", "planner"}, {"requests", "--limit", "-1"}, {"requests", "-o", "yaml"},
		{"requests", "extra"}, {"requests", "--ztunnel", "127.0.0.1:15000"},
	} {
		if code := run(ctx, args, &out, &errOut); code != 2 {
			t.Errorf("meshctl %v: exit %d, want 2", args, code)
		}
	}
	// One tunnel down, one keeping nothing: the error and a warning, the
	// table still printed, exit 1.
	off := newRequestsServer(t, func(string, int) debug.Requests { return debug.Requests{Node: "n3", Requests: []debug.Request{}} })
	out.Reset()
	errOut.Reset()
	code := run(ctx, []string{"requests", "--ztunnel", "http://127.0.0.1:1", "--ztunnel", off.srv.URL}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "unreachable") || !strings.Contains(errOut.String(), "node n3 keeps no requests") ||
		!strings.Contains(out.String(), "TIME") || !strings.Contains(out.String(), "(no requests") {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	// A tunnel's 400 is shown.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `bad limit "x": want a positive number`, http.StatusBadRequest)
	}))
	defer bad.Close()
	errOut.Reset()
	if code := run(ctx, []string{"requests", "--ztunnel", bad.URL}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "bad limit") {
		t.Errorf("a tunnel's 400: exit %d, %q", code, errOut.String())
	}
}
