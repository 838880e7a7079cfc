package netaddr

import (
	"net"
	"net/netip"
	"testing"
)

type strAddr string

func (s strAddr) Network() string { return "tcp" }
func (s strAddr) String() string  { return string(s) }

func TestAddrPort(t *testing.T) {
	for _, tc := range []struct {
		in   net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 80}, "10.0.0.1:80"},
		{net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")), "10.0.0.1:80"},
		{&net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 443}, "[fd00::1]:443"},
		{strAddr("10.0.0.2:8080"), "10.0.0.2:8080"},
		{strAddr("garbage"), "invalid AddrPort"},
		{nil, "invalid AddrPort"},
	} {
		if got := AddrPort(tc.in).String(); got != tc.want {
			t.Errorf("AddrPort(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
