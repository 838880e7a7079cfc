package freeport

import (
	"net"
	"net/netip"
	"testing"
)

// TestFind: the ports are distinct, below the ephemeral range, and can be
// bound once Find returns.
func TestFind(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	ports, err := Find(lo, 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	start := ephemeralStart()
	for _, p := range ports {
		if seen[p] || int(p) < low || int(p) >= start {
			t.Fatalf("ports %v: want 5 distinct ports in [%d, %d)", ports, low, start)
		}
		seen[p] = true
		l, err := net.Listen("tcp", netip.AddrPortFrom(lo, p).String())
		if err != nil {
			t.Fatalf("port %d not free after Find: %v", p, err)
		}
		l.Close()
	}
	addrs, err := Addrs(lo, 2)
	if err != nil || len(addrs) != 2 {
		t.Fatalf("Addrs = %v, %v", addrs, err)
	}
}
