package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// node is a ztunnel's recorder serving its metrics, as on a node.
type node struct {
	rec *record.Recorder
	srv *httptest.Server
}

func newNode(t *testing.T) *node {
	reg := prometheus.NewRegistry()
	n := &node{rec: record.New(slog.New(slog.DiscardHandler), reg, 0)}
	n.srv = httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(n.srv.Close)
	return n
}

var (
	planner = &meshconfig.Workload{Name: "planner-6f7d-x1", WorkloadName: "planner", Namespace: "agents"}
	dv      = &meshconfig.Workload{Name: "dv-5c9-a", WorkloadName: "data-validator", Namespace: "agents"}
	billing = &meshconfig.Workload{Name: "billing-0", WorkloadName: "billing", Namespace: "pay"}
)

// conn records a connection from src to dst on n as reporter dir:
// connected, and ended (with its bytes) unless open.
func (n *node) conn(dir flow.Direction, src, dst *meshconfig.Workload, sent, received int64, open bool) {
	f := flow.New(dir, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
	f.SrcWorkload, f.DstWorkload, f.MTLS = src, dst, true
	f.Sent, f.Received = sent, received
	n.rec.Connected(f)
	if !open {
		n.rec.Access(f)
	}
}

// TestStat reads the series ztunnel's recorder really writes, from two
// nodes, twice, and turns them into rows by workload and by edge.
func TestStat(t *testing.T) {
	n1, n2 := newNode(t), newNode(t)
	// Before the first read: one ended connection planner -> dv, one left
	// open, seen by both reporters (planner on n1, dv on n2).
	for _, n := range []struct {
		n   *node
		dir flow.Direction
	}{{n1, flow.Outbound}, {n2, flow.Inbound}} {
		n.n.conn(n.dir, planner, dv, 100, 1000, false)
		n.n.conn(n.dir, planner, dv, 0, 0, true)
	}
	eps := []*endpoint{}
	for _, n := range []*node{n1, n2} {
		e, err := newEndpoint("ztunnel metrics", n.srv.URL, "", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, e)
	}
	ctx := context.Background()
	before, err := readAll(ctx, eps)
	if err != nil {
		t.Fatal(err)
	}
	// Between the reads: four more planner -> dv that ended (8 KiB in,
	// 4 KiB back in all), and billing -> dv from outside planner's node.
	for range 4 {
		n1.conn(flow.Outbound, planner, dv, 2048, 1024, false)
		n2.conn(flow.Inbound, planner, dv, 2048, 1024, false)
	}
	n2.conn(flow.Inbound, billing, dv, 10, 20, false)
	after, err := readAll(ctx, eps)
	if err != nil {
		t.Fatal(err)
	}

	rows := statRows(before, after, 2*time.Second, "workload", "")
	if len(rows) != 1 {
		t.Fatalf("rows by workload %+v, want data-validator's only (destination reporter)", rows)
	}
	want := StatRow{To: "agents/data-validator", Open: 1, NewPerSec: 2.5, ReceivedPerSec: (4*2048 + 10) / 2.0, SentPerSec: (4*1024 + 20) / 2.0}
	if rows[0] != want {
		t.Errorf("by workload %+v, want %+v", rows[0], want)
	}
	edges := statRows(before, after, 2*time.Second, "edge", "")
	wantEdge := StatRow{From: "agents/planner", To: "agents/data-validator", Security: "mutual_tls", Open: 1, NewPerSec: 2, ReceivedPerSec: 4096, SentPerSec: 2048}
	if len(edges) != 1 || edges[0] != wantEdge {
		t.Errorf("by edge %+v, want only %+v (billing's node reports no source series here)", edges, wantEdge)
	}
	if rows := statRows(before, after, time.Second, "workload", "pay"); len(rows) != 0 {
		t.Errorf("-n pay: %+v, want none (data-validator is in agents)", rows)
	}
	// A node whose ztunnel restarted between the reads: its counters
	// start again, the rate counts what is there.
	restarted := statRows(after, before, time.Second, "workload", "")
	if restarted[0].NewPerSec < 0 || restarted[0].ReceivedPerSec < 0 {
		t.Errorf("after a counter reset: %+v, want no negative rates", restarted[0])
	}
}

func TestStatCommand(t *testing.T) {
	n := newNode(t)
	n.conn(flow.Inbound, planner, dv, 1, 2, true)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"stat", "--metrics", n.srv.URL, "--interval", "10ms"}, &out, &errOut); code != 0 {
		t.Fatalf("meshctl stat: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "WORKLOAD") || !strings.Contains(out.String(), "agents/data-validator") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"stat", "--metrics", n.srv.URL, "--interval", "10ms", "-o", "json", "--by", "edge"}, &out, &errOut); code != 0 {
		t.Fatalf("meshctl stat -o json: exit %d: %s", code, errOut.String())
	}
	var rows []StatRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 0 {
		t.Errorf("json by edge from a destination-only node: %q, %v; want []", out.String(), err)
	}
	for _, args := range [][]string{{"stat", "--by", "pod"}, {"stat", "--interval", "0s"}, {"stat", "-o", "yaml"}, {"stat", "extra"}} {
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("meshctl %v: exit %d, want 2", args, code)
		}
	}
	if code := run(context.Background(), []string{"stat", "--metrics", "http://127.0.0.1:1/metrics", "--interval", "10ms"}, &out, &errOut); code != 1 {
		t.Errorf("unreachable metrics: exit %d, want 1", code)
	}
}

// TestStatRequests: requests recorded by the recorder give each row its
// request rate, success rate and latency percentiles, from the
// histogram's buckets between the reads.
func TestStatRequests(t *testing.T) {
	n := newNode(t)
	req := func(d time.Duration, status int) {
		f := flow.New(flow.Inbound, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
		f.SrcWorkload, f.DstWorkload, f.MTLS, f.AppProtocol = planner, dv, true, "http1"
		n.rec.Request(f, record.Request{Method: "GET", Status: status, Duration: d})
	}
	req(time.Second, 200) // before the first read: not counted
	e, err := newEndpoint("ztunnel metrics", n.srv.URL, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	before, err := readAll(ctx, []*endpoint{e})
	if err != nil {
		t.Fatal(err)
	}
	// 90 fast (3 ms, bucket 2.5-5 ms), 9 at 80 ms (50-100 ms), one 503 at 2 s.
	for range 90 {
		req(3*time.Millisecond, 200)
	}
	for range 9 {
		req(80*time.Millisecond, 200)
	}
	req(2*time.Second, 503)
	after, err := readAll(ctx, []*endpoint{e})
	if err != nil {
		t.Fatal(err)
	}
	rows := statRows(before, after, 10*time.Second, "workload", "")
	if len(rows) != 1 || rows[0].Requests == nil {
		t.Fatalf("rows %+v, want data-validator with requests", rows)
	}
	q := rows[0].Requests
	if q.PerSec != 10 || q.SuccessRate != 0.99 {
		t.Errorf("requests %+v, want 10/s and 99%% success", q)
	}
	if q.P50 <= 2.5 || q.P50 > 5 || q.P95 <= 50 || q.P95 > 100 || q.P99 <= 50 || q.P99 > 100 {
		t.Errorf("p50 %.2f ms (want in 2.5-5), p95 %.2f and p99 %.2f ms (want in 50-100)", q.P50, q.P95, q.P99)
	}
	var out bytes.Buffer
	printStat(&out, rows, "workload", 10*time.Second)
	if !strings.Contains(out.String(), "99.00%") || !strings.Contains(out.String(), "REQ/S") {
		t.Errorf("text output:\n%s", out.String())
	}
}

func TestQuantile(t *testing.T) {
	b := map[float64]float64{0.1: 50, 0.2: 100, math.Inf(1): 100}
	for _, tc := range []struct{ q, want float64 }{{0.25, 0.05}, {0.5, 0.1}, {0.75, 0.15}, {1, 0.2}} {
		if got := quantile(tc.q, b); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(0.99, map[float64]float64{1: 1, math.Inf(1): 10}); got != 1 {
		t.Errorf("rank in +Inf: %v, want the largest finite bound 1", got)
	}
}
