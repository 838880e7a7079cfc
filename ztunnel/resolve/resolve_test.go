package resolve

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

var (
	a4, a6 = netip.MustParseAddr("10.0.1.5"), netip.MustParseAddr("fd00:1::5")
	b4     = netip.MustParseAddr("10.0.2.6")
	ext    = netip.MustParseAddr("192.0.2.9")
	vip4   = netip.MustParseAddr("10.96.0.7")
	vip6   = netip.MustParseAddr("fd00:96::7")
)

func testIndex() *meshconfig.Index {
	return meshconfig.NewIndex(&meshconfig.Config{
		TrustDomain: "cluster.local",
		Workloads: []meshconfig.Workload{
			{UID: "uid-a", Name: "dv-a", Namespace: "agents", ServiceAccount: "dv", Node: "n1", IPs: []netip.Addr{a4, a6}, Enrolled: true},
			{UID: "uid-b", Name: "dv-b", Namespace: "agents", ServiceAccount: "dv", Node: "n2", IPs: []netip.Addr{b4}},
		},
		Services: []meshconfig.Service{{
			Name: "dv", Namespace: "agents", VIPs: []netip.Addr{vip4, vip6},
			Ports: []meshconfig.ServicePort{{Name: "http", Port: 80}, {Name: "raw", Port: 7000, TargetPort: 7001}},
			Endpoints: []meshconfig.Endpoint{
				// The v4 and v6 slices both list pod a; the v6 one says not ready.
				{WorkloadUID: "uid-a", IPs: []netip.Addr{a4}, Ready: true, Ports: map[string]uint16{"http": 8080}},
				{WorkloadUID: "uid-a", IPs: []netip.Addr{a6}, Ready: false, Ports: map[string]uint16{"http": 8080}},
				{WorkloadUID: "uid-b", IPs: []netip.Addr{b4}, Ready: true, Ports: map[string]uint16{"http": 8081}},
				{IPs: []netip.Addr{ext}, Ready: true}, // no port named http: left out of port 80
				// A pod the config does not have (deleted): never reached.
				{WorkloadUID: "uid-gone", IPs: []netip.Addr{netip.MustParseAddr("10.0.3.7")}, Ready: true, Ports: map[string]uint16{"http": 8080}},
			},
		}},
	})
}

func TestOutboundVIP(t *testing.T) {
	idx := testIndex()
	r := New(func() *meshconfig.Index { return idx })
	p := &flow.Pod{Workload: idx.Config.Workloads[0]}
	f := flow.New(flow.Outbound, "", netip.MustParseAddrPort("10.0.1.5:40000"), netip.AddrPortFrom(vip6, 80))
	r.Outbound(f, p)
	if f.Service == nil || f.Service.Key() != "agents/dv" || f.ServicePort == nil || f.ServicePort.Port != 80 {
		t.Fatalf("service %v port %v, want agents/dv port 80", f.Service, f.ServicePort)
	}
	if f.DstWorkload != nil || f.Protocol != "" {
		t.Errorf("destination named before an endpoint was chosen: %v %s", f.DstWorkload, f.Protocol)
	}
	f = flow.New(flow.Outbound, "", netip.MustParseAddrPort("10.0.1.5:40000"), netip.AddrPortFrom(vip4, 81))
	r.Outbound(f, p)
	if f.Service == nil || f.ServicePort != nil {
		t.Errorf("port 81: service %v port %v, want the service without a port", f.Service, f.ServicePort)
	}
}

func TestEndpoints(t *testing.T) {
	idx := testIndex()
	s := idx.Service("agents", "dv")
	wa, wb := idx.ByUID("uid-a"), idx.ByUID("uid-b")
	for _, tc := range []struct {
		name string
		vip  netip.Addr
		port uint16
		want []balance.Endpoint
	}{
		{"v4 named port", vip4, 80, []balance.Endpoint{
			{Key: "uid-a", Addr: netip.AddrPortFrom(a4, 8080), Workload: wa, Ready: true},
			{Key: "uid-b", Addr: netip.AddrPortFrom(b4, 8081), Workload: wb, Ready: true},
		}},
		{"v6: the pod's v6 address, ready from either slice", vip6, 80, []balance.Endpoint{
			{Key: "uid-a", Addr: netip.AddrPortFrom(a6, 8080), Workload: wa, Ready: true},
			{Key: "uid-b", Addr: netip.AddrPortFrom(b4, 8081), Workload: wb, Ready: true},
		}},
		{"numbered target port, an endpoint that is no pod", vip4, 7000, []balance.Endpoint{
			{Key: "uid-a", Addr: netip.AddrPortFrom(a4, 7001), Workload: wa, Ready: true},
			{Key: "uid-b", Addr: netip.AddrPortFrom(b4, 7001), Workload: wb, Ready: true},
			{Key: ext.String(), Addr: netip.AddrPortFrom(ext, 7001), Ready: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Endpoints(idx, s, s.Port(tc.port), tc.vip)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
	r := New(func() *meshconfig.Index { return idx })
	f := &flow.Flow{}
	eps := Endpoints(idx, s, s.Port(80), vip4)
	r.Endpoint(f, &eps[0])
	if f.Protocol != flow.HBONE || !f.MTLS || f.DstID.String() != "spiffe://cluster.local/ns/agents/sa/dv" || f.Upstream != eps[0].Addr {
		t.Errorf("mesh endpoint: %s mtls=%v id=%s upstream=%s", f.Protocol, f.MTLS, f.DstID, f.Upstream)
	}
	r.Endpoint(f, &eps[1])
	if f.Protocol != flow.Passthrough || f.MTLS || !f.DstID.IsZero() {
		t.Errorf("endpoint outside the mesh: %s mtls=%v id=%s", f.Protocol, f.MTLS, f.DstID)
	}
}

// TestEndpointsFollowConfig: the endpoints of a flow resolved with one
// config are read from the config in force when asked again (a retry).
func TestEndpointsFollowConfig(t *testing.T) {
	idx := testIndex()
	r := New(func() *meshconfig.Index { return idx })
	f := flow.New(flow.Outbound, "", netip.MustParseAddrPort("10.0.1.5:40000"), netip.AddrPortFrom(vip4, 80))
	r.Outbound(f, &flow.Pod{})
	if n := len(r.Endpoints(f)); n != 2 {
		t.Fatalf("%d endpoints, want 2", n)
	}
	c := *idx.Config
	c.Services = []meshconfig.Service{c.Services[0]}
	c.Services[0].Endpoints = c.Services[0].Endpoints[2:3] // only pod b
	idx = meshconfig.NewIndex(&c)
	if eps := r.Endpoints(f); len(eps) != 1 || eps[0].Key != "uid-b" {
		t.Errorf("after a new config: %+v, want only uid-b", eps)
	}
	c.Services = nil
	idx = meshconfig.NewIndex(&c)
	if eps := r.Endpoints(f); len(eps) != 0 {
		t.Errorf("service gone: %+v, want none", eps)
	}
}
