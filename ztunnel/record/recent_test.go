package record

import (
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

var (
	planner = &meshconfig.Workload{Name: "planner-6f7d-x1", WorkloadName: "planner", Namespace: "agents"}
	tools   = &meshconfig.Workload{Name: "tools-0", WorkloadName: "tools", Namespace: "agents"}
	billing = &meshconfig.Workload{Name: "billing", Namespace: "pay"} // standalone: no WorkloadName
)

func newRecorder(size int) *Recorder {
	return New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), size)
}

// request records a request from src to dst on r as reporter dir, its
// path /<i>.
func request(r *Recorder, dir flow.Direction, src, dst *meshconfig.Workload, i int) {
	f := flow.New(dir, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
	f.SrcWorkload, f.DstWorkload = src, dst
	r.Request(f, Request{Method: "POST", Path: "/" + strconv.Itoa(i), Status: 200})
}

// paths are the paths of qs, in order.
func paths(qs []debug.Request) string {
	var s []string
	for _, q := range qs {
		s = append(s, q.Path)
	}
	return strings.Join(s, " ")
}

func TestRecentRing(t *testing.T) {
	r := newRecorder(4)
	if got := r.Recent("", 0); len(got) != 0 {
		t.Errorf("empty ring: %+v", got)
	}
	for i := range 3 {
		request(r, flow.Outbound, planner, tools, i)
	}
	if got := paths(r.Recent("", 0)); got != "/2 /1 /0" {
		t.Errorf("before wrapping: %q, want newest first", got)
	}
	// 10 requests in a ring of 4: the last 4, newest first.
	for i := 3; i < 10; i++ {
		src := planner
		if i%2 == 1 {
			src = billing
		}
		request(r, flow.Outbound, src, tools, i)
	}
	if got := paths(r.Recent("", 0)); got != "/9 /8 /7 /6" {
		t.Errorf("after wrapping: %q, want /9 /8 /7 /6", got)
	}
	if n := len(r.recent.buf); n != 4 || r.RecentCapacity() != 4 {
		t.Errorf("ring length %d, capacity %d: want 4 (fixed)", n, r.RecentCapacity())
	}
	for _, tc := range []struct {
		workload string
		limit    int
		want     string
	}{
		{"", 2, "/9 /8"},
		{"", 100, "/9 /8 /7 /6"},
		{"agents/planner", 0, "/8 /6"},         // the source's Deployment
		{"agents/planner-6f7d-x1", 1, "/8"},    // the source's pod, limited
		{"pay/billing", 0, "/9 /7"},            // no WorkloadName: the pod's name
		{"agents/tools", 3, "/9 /8 /7"},        // the destination
		{"other/planner", 0, ""},               // another namespace
		{"agents/billing", 0, ""},              // billing is in pay
		{"agents/planner/x", 0, ""},            // no such name
		{"pay/billing", 1, "/9"},               // limit counts the matches
		{"agents/planner", 5, "/8 /6"},         // fewer matches than limit
		{"agents/tools-0", 0, "/9 /8 /7 /6"},   // the destination's pod
		{"agents/planner-6f7d-x1", 0, "/8 /6"}, // the source's pod
	} {
		if got := paths(r.Recent(tc.workload, tc.limit)); got != tc.want {
			t.Errorf("Recent(%q, %d) = %q, want %q", tc.workload, tc.limit, got, tc.want)
		}
	}
}

// TestRecentFields: a kept request says what the request line says.
func TestRecentFields(t *testing.T) {
	r := newRecorder(2)
	f := flow.New(flow.Outbound, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
	f.SrcWorkload, f.DstWorkload, f.AppProtocol = planner, tools, "mcp"
	f.SrcID = spiffe.New("cluster.local", "agents", "planner")
	f.DstID = spiffe.New("cluster.local", "agents", "tools")
	f.Service = &meshconfig.Service{Name: "tools", Namespace: "agents"}
	long := "/" + strings.Repeat("x", 5000)
	before := time.Now()
	r.Request(f, Request{Method: "POST", Authority: "tools:8080", Path: long, Status: 503, Err: errors.New("no_endpoint"),
		Attempts: 2, Duration: 1500 * time.Microsecond, MCPMethod: "tools/call", MCPTool: "search", TraceID: "t1", SpanID: "s1"})
	g := r.Recent("", 0)
	if len(g) != 1 {
		t.Fatalf("got %d requests, want 1", len(g))
	}
	got := g[0]
	if got.Time.Before(before) || time.Since(got.Time) > time.Minute {
		t.Errorf("time %v, want now", got.Time)
	}
	if len(got.Path) != maxKeptPath || !strings.HasPrefix(long, got.Path) {
		t.Errorf("path of %d bytes kept as %d, want its first %d", len(long), len(got.Path), maxKeptPath)
	}
	got.Time, got.Path = time.Time{}, ""
	want := debug.Request{
		Reporter:    "source",
		Source:      debug.RequestPeer{Workload: "agents/planner", Pod: "agents/planner-6f7d-x1", Identity: "spiffe://cluster.local/ns/agents/sa/planner"},
		Destination: debug.RequestPeer{Workload: "agents/tools", Pod: "agents/tools-0", Identity: "spiffe://cluster.local/ns/agents/sa/tools"},
		Service:     "agents/tools", Protocol: "mcp", Method: "POST", Authority: "tools:8080", Status: 503, Result: "no_endpoint",
		DurationMillis: 1.5, Attempts: 2, MCPMethod: "tools/call", MCPTool: "search", TraceID: "t1", SpanID: "s1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kept request (-want +got):\n%s", diff)
	}

	// The destination's record of a request from outside the mesh.
	f = flow.New(flow.Inbound, flow.Plaintext, netip.AddrPort{}, netip.AddrPort{})
	f.DstWorkload = tools
	r.Request(f, Request{Method: "GET", Path: "/", Status: 200})
	got = r.Recent("", 1)[0]
	if got.Reporter != "destination" || got.Source != (debug.RequestPeer{}) || got.Result != "ok" || got.Service != "" {
		t.Errorf("inbound plaintext request: %+v", got)
	}
}

func TestRecentOff(t *testing.T) {
	r := newRecorder(0)
	request(r, flow.Outbound, planner, tools, 1)
	if got := r.Recent("", 0); len(got) != 0 || r.RecentCapacity() != 0 {
		t.Errorf("no ring: %+v, capacity %d", got, r.RecentCapacity())
	}
}

// TestRecentConcurrent: requests recorded while others read (run with
// -race).
func TestRecentConcurrent(t *testing.T) {
	r := newRecorder(8)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				request(r, flow.Outbound, planner, tools, g*1000+i)
				if got := r.Recent("agents/planner", 3); len(got) == 0 || len(got) > 3 {
					t.Errorf("Recent while recording: %d requests", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	if got := r.Recent("", 0); len(got) != 8 {
		t.Errorf("after 800 requests: %d kept, want 8", len(got))
	}
}

func TestBounded(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"", 3, ""},
		{"aé", 2, "a"}, // é is two bytes: not cut in half
		{"aéb", 3, "aé"},
	} {
		if got := bounded(tc.s, tc.n); got != tc.want {
			t.Errorf("bounded(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
