package meshconfig

import (
	"net/netip"
	"testing"
)

func TestIndexServices(t *testing.T) {
	c := &Config{Services: []Service{{
		Name: "dv", Namespace: "agents",
		VIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.7"), netip.MustParseAddr("fd00:96::7")},
		Ports: []ServicePort{{Name: "http", Port: 80}, {Name: "admin", Port: 9000, TargetPort: 9001}},
		Endpoints: []Endpoint{{
			IPs: []netip.Addr{netip.MustParseAddr("10.0.1.5")}, Ready: true,
			Ports: map[string]uint16{"http": 8080},
		}},
	}}}
	x := NewIndex(c)
	for _, vip := range []string{"10.96.0.7", "fd00:96::7", "::ffff:10.96.0.7"} {
		if s := x.ServiceByVIP(netip.MustParseAddr(vip)); s == nil || s.Key() != "agents/dv" {
			t.Errorf("ServiceByVIP(%s) = %v, want agents/dv", vip, s)
		}
	}
	if s := x.ServiceByVIP(netip.MustParseAddr("10.96.0.8")); s != nil {
		t.Errorf("ServiceByVIP(10.96.0.8) = %s, want none", s.Key())
	}
	s := x.Service("agents", "dv")
	if s == nil || x.Service("other", "dv") != nil {
		t.Fatalf("Service lookup by name wrong: %v", s)
	}
	e := &s.Endpoints[0]
	if got := e.TargetPort(s.Port(80)); got != 8080 {
		t.Errorf("named target port = %d, want 8080", got)
	}
	if got := e.TargetPort(s.Port(9000)); got != 9001 {
		t.Errorf("numbered target port = %d, want 9001", got)
	}
	if s.Port(81) != nil {
		t.Error("Port(81) found a port the service does not have")
	}
}
