package ztunnel

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// TestDebugRequests: /debug/requests lists the requests the recorder
// kept, newest first, filtered by workload and limited; a bad workload or
// limit is 400.
func TestDebugRequests(t *testing.T) {
	n := NewNode(NodeOptions{NodeName: "n1", Logger: discard, Certs: newManager(t, newCA(t, td), nil),
		OrigDst: &fakeOrigDst{}, Listeners: &fakeListeners{}, RecentRequests: 3})
	c := testConfig(true)
	n.SetConfig(c)
	client, other, server := &c.Workloads[0], &c.Workloads[1], &c.Workloads[2]
	for i, src := range []int{0, 1, 0, 1} { // four requests: the first is dropped
		f := flow.New(flow.Inbound, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
		f.SrcWorkload, f.DstWorkload = []*meshconfig.Workload{client, other}[src], server
		n.rec.Request(f, record.Request{Method: "GET", Path: "/" + string(rune('a'+i)), Status: 200})
	}
	srv := httptest.NewServer(n.AdminHandler())
	defer srv.Close()

	for _, tc := range []struct {
		query string
		want  string
	}{
		{"", "/d /c /b"},
		{"?limit=2", "/d /c"},
		{"?workload=agents/client", "/c"},
		{"?workload=agents/other&limit=1", "/d"},
		{"?workload=agents/server&limit=10", "/d /c /b"},
		{"?workload=agents/nobody", ""},
	} {
		var got debug.Requests
		if code := get(t, srv.URL+debug.RequestsPath+tc.query, &got); code != http.StatusOK {
			t.Fatalf("%s: status %d", tc.query, code)
		}
		var paths []string
		for _, q := range got.Requests {
			paths = append(paths, q.Path)
			if q.Node != "n1" || q.Reporter != "destination" || q.Destination.Workload != "agents/server" {
				t.Errorf("%s: request %+v, want node n1, reporter destination, to agents/server", tc.query, q)
			}
		}
		if strings.Join(paths, " ") != tc.want || got.Node != "n1" || got.Capacity != 3 || got.Requests == nil {
			t.Errorf("%s: node %q capacity %d paths %q, want n1, 3, %q", tc.query, got.Node, got.Capacity, paths, tc.want)
		}
	}
	for _, tc := range []struct{ query, msg string }{
		{"?workload=client", `bad workload "client": want namespace/name`},
		{"?workload=agents/", "bad workload"},
		{"?workload=/client", "bad workload"},
		{"?limit=0", `bad limit "0": want a positive number`},
		{"?limit=-3", "bad limit"},
		{"?limit=ten", "bad limit"},
	} {
		code, body := getBody(t, srv.URL+debug.RequestsPath+tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.query, code, body, tc.msg)
		}
	}
}
