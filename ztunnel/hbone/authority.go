package hbone

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseAuthority reads an HBONE :authority, "<ip>:<port>" or "[<ipv6>]:<port>".
// It is strict: the host must be an IP literal without zone, IPv6 in brackets
// and IPv4 without, neither unspecified nor multicast; the port must be a
// decimal 1-65535 without sign or leading zeros. IPv4-mapped IPv6 addresses
// come back as IPv4.
func ParseAuthority(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("authority %q: missing port", s)
	}
	host, portStr := s[:i], s[i+1:]
	port, err := parsePort(portStr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("authority %q: %w", s, err)
	}
	addr, err := parseHost(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("authority %q: %w", s, err)
	}
	return netip.AddrPortFrom(addr, port), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || s[0] == '0' || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("port %q: want a decimal number 1-65535", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: want a decimal number 1-65535", s)
	}
	return uint16(n), nil
}

func parseHost(host string) (netip.Addr, error) {
	bracketed := strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") && len(host) >= 2
	if bracketed {
		host = host[1 : len(host)-1]
	}
	addr, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("host %q is not an ip address", host)
	case addr.Zone() != "":
		return netip.Addr{}, fmt.Errorf("host %q has a zone", host)
	case addr.Is6() != bracketed:
		return netip.Addr{}, fmt.Errorf("host %q: ipv6 needs brackets, ipv4 must not have them", host)
	}
	addr = addr.Unmap()
	if addr.IsUnspecified() || addr.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("host %s is not a unicast address", addr)
	}
	return addr, nil
}
