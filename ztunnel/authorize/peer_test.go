package authorize

import (
	"net/netip"
	"testing"

	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

func TestDestination(t *testing.T) {
	p := &flow.Pod{IPs: []netip.Addr{netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("fd00:18::2")}}
	for _, tc := range []struct {
		a  string
		ok bool
	}{
		{"198.18.1.2:8080", true}, {"[fd00:18::2]:80", true}, {"[::ffff:198.18.1.2]:80", true},
		{"198.18.1.1:8080", false}, {"198.18.1.2:15008", false}, {"198.18.1.2:15001", false},
		{"198.18.1.2:0", false}, {"127.0.0.1:8080", false},
	} {
		err := Destination(p, netip.MustParseAddrPort(tc.a))
		if (err == nil) != tc.ok {
			t.Errorf("Destination(%s) = %v, want ok=%v", tc.a, err, tc.ok)
		}
	}
	if err := Destination(p, netip.AddrPort{}); err == nil {
		t.Error("zero authority accepted")
	}
}
