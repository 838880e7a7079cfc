package bench

import (
	"net/netip"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

func TestFindAccessAndDescribePaths(t *testing.T) {
	echo, sink := netip.MustParseAddrPort("198.19.2.3:9000"), netip.MustParseAddrPort("[fd00:19:2::3]:9001")
	t0 := time.Unix(1000, 0)
	logs := []lab.AccessLog{
		{Time: t0.Add(-time.Second), Direction: "outbound", Protocol: "passthrough", DstAddr: "198.19.2.3:9000"}, // before since
		{Time: t0, Direction: "outbound", Protocol: "hbone", MTLS: true, DstAddr: "198.19.2.3:9000"},
		{Time: t0.Add(time.Second), Direction: "inbound", Protocol: "hbone", MTLS: true, DstAddr: "198.19.2.3:9000"}, // inbound
		{Time: t0.Add(time.Second), Direction: "outbound", Protocol: "hbone", MTLS: true, DstAddr: "[fd00:19:2::3]:9001"},
		{Time: t0.Add(time.Second), Direction: "outbound", Protocol: "hbone", MTLS: true, DstAddr: "198.19.2.3:9002"}, // other port
		{Time: t0.Add(2 * time.Second), Direction: "outbound", Protocol: "passthrough", DstAddr: "198.19.2.3:9000"},
	}
	got := findAccess(logs, t0, []netip.AddrPort{echo, sink})
	if len(got) != 3 {
		t.Fatalf("found %d lines, want 3: %+v", len(got), got)
	}
	if p := describePaths(got); p != "hbone+mtls,passthrough" {
		t.Errorf("describePaths = %q, want hbone+mtls,passthrough", p)
	}
	if p := describePaths(got[:2]); p != "hbone+mtls" {
		t.Errorf("describePaths = %q, want hbone+mtls", p)
	}
	if got := findAccess(logs, t0.Add(time.Hour), []netip.AddrPort{echo}); len(got) != 0 {
		t.Errorf("found %d lines after the last one", len(got))
	}
}
