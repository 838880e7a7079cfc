package ztunnel

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// TestDebugServices: /debug/services shows a service's endpoints, one per
// pod (both families merged), with identity, transport and the
// balancer's state; an unknown service is 404, a bad name 400.
func TestDebugServices(t *testing.T) {
	n := NewNode(NodeOptions{NodeName: "n1", Logger: discard, Certs: newManager(t, newCA(t, td), nil),
		OrigDst: &fakeOrigDst{}, Listeners: &fakeListeners{}})
	c := testConfig(true)
	out := workload("uid-x", "outside", ipX)
	out.Enrolled = false
	c.Workloads = append(c.Workloads, out)
	c.Services = []meshconfig.Service{{
		Name: "dv", Namespace: "agents", VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.7")},
		Ports: []meshconfig.ServicePort{{Name: "http", Port: 80}},
		Endpoints: []meshconfig.Endpoint{
			{WorkloadUID: "uid-b", IPs: []netip.Addr{ipB}, Ready: true, Ports: map[string]uint16{"http": 8080}},
			{WorkloadUID: "uid-b", IPs: []netip.Addr{ip6B}, Ready: true, Ports: map[string]uint16{"http": 8080}},
			{WorkloadUID: "uid-x", IPs: []netip.Addr{ipX}, Ready: false, Ports: map[string]uint16{"http": 8080}},
		},
	}}
	n.SetConfig(c)
	n.balancer.Begin("agents/dv", &balance.Endpoint{Key: "uid-b"}).Connected()
	srv := httptest.NewServer(n.AdminHandler())
	defer srv.Close()

	var got []debug.Service
	if code := get(t, srv.URL+debug.ServicesPath+"?service=agents/dv", &got); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if len(got) != 1 || len(got[0].Endpoints) != 2 {
		t.Fatalf("got %+v, want one service with 2 endpoints", got)
	}
	b, x := got[0].Endpoints[0], got[0].Endpoints[1]
	if b.Workload != "agents/server" || !b.Mesh || b.Identity != spiffeOf("server") || !b.Ready || len(b.Addrs) != 2 || b.Open != 1 || b.Picks != 1 {
		t.Errorf("mesh endpoint: %+v", b)
	}
	if x.Workload != "agents/outside" || x.Mesh || x.Identity != "" || x.Ready || x.Open != 0 {
		t.Errorf("endpoint outside the mesh: %+v", x)
	}
	if got[0].Ports[0].TargetPort != "http (named)" {
		t.Errorf("target port %q", got[0].Ports[0].TargetPort)
	}
	if code := get(t, srv.URL+debug.ServicesPath+"?service=agents/nope", nil); code != http.StatusNotFound {
		t.Errorf("unknown service: status %d, want 404", code)
	}
	if code := get(t, srv.URL+debug.ServicesPath+"?service=nope", nil); code != http.StatusBadRequest {
		t.Errorf("bad name: status %d, want 400", code)
	}
	if code := get(t, srv.URL+debug.ServicesPath, &got); code != http.StatusOK || len(got) != 1 {
		t.Errorf("all services: status %d, %d services", code, len(got))
	}
}
