// Package netaddr converts the addresses of TCP connections.
package netaddr

import (
	"net"
	"net/netip"
)

// AddrPort is a TCP connection's address as netip, IPv4-mapped IPv6
// unmapped; zero when a is nil or not an address.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if t, ok := a.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	} else if a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
