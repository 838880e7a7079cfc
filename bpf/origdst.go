package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNoOrigDst means the orig_dst map has no entry for a connection: it was
// not redirected by connect4/6, or its entry was already taken.
var ErrNoOrigDst = errors.New("no original destination recorded")

// tupleKey is the orig_dst key of an accepted outbound connection as
// ztunnel sees it: src = conn.RemoteAddr(), dst = conn.LocalAddr().
// Addresses are stored v4-mapped, ports in host byte order, and Family is
// AF_INET when dst is IPv4 (or v4-mapped), else AF_INET6.
func tupleKey(netnsCookie uint64, src, dst netip.AddrPort) captureTupleKey {
	k := captureTupleKey{
		NetnsCookie: netnsCookie,
		SrcAddr:     src.Addr().As16(),
		DstAddr:     dst.Addr().As16(),
		SrcPort:     src.Port(),
		DstPort:     dst.Port(),
		Family:      unix.AF_INET6,
	}
	if dst.Addr().Unmap().Is4() {
		k.Family = unix.AF_INET
	}
	return k
}

// LookupOrigDst returns the original destination of the redirected
// connection src -> dst (the app's address and ztunnel's 15001 address) in
// the netns with the given cookie and deletes the entry. IPv4 destinations
// come back as IPv4 (unmapped). The error wraps ErrNoOrigDst when absent.
func LookupOrigDst(m *ebpf.Map, netnsCookie uint64, src, dst netip.AddrPort) (netip.AddrPort, error) {
	key := tupleKey(netnsCookie, src, dst)
	var v captureOrigAddr
	if err := m.LookupAndDelete(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = ErrNoOrigDst
		}
		return netip.AddrPort{}, fmt.Errorf("orig dst of %s -> %s in netns %d: %w", src, dst, netnsCookie, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(v.Addr).Unmap(), v.Port), nil
}
