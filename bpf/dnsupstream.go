package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNoDNSUpstream means the dns_upstream map has no entry for a DNS
// client: its query was not captured by the DNS programs.
var ErrNoDNSUpstream = errors.New("no DNS upstream recorded")

// dnsKey is the dns_upstream key of a query as ztunnel's proxy sees it:
// client = the query's source address (127.0.0.1 or ::1, maybe mapped).
func dnsKey(netnsCookie uint64, client netip.AddrPort) dnsDnsKey {
	k := dnsDnsKey{NetnsCookie: netnsCookie, Port: client.Port(), Family: unix.AF_INET6}
	if client.Addr().Unmap().Is4() {
		k.Family = unix.AF_INET
	}
	return k
}

// LookupDNSUpstream returns the upstream resolver (address and port 53)
// that the query from client (its source address at ztunnel's proxy) in
// the netns with the given cookie was addressed to. IPv4 upstreams come
// back unmapped. The entry stays: the client socket may send again. The
// error wraps ErrNoDNSUpstream when absent.
func LookupDNSUpstream(m *ebpf.Map, netnsCookie uint64, client netip.AddrPort) (netip.AddrPort, error) {
	key := dnsKey(netnsCookie, client)
	var v dnsOrigAddr
	if err := m.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = ErrNoDNSUpstream
		}
		return netip.AddrPort{}, fmt.Errorf("dns upstream of %s in netns %d: %w", client, netnsCookie, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(v.Addr).Unmap(), v.Port), nil
}
