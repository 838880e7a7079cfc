package ztunnel

import (
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/agentmesh/agentmesh/bpf"
)

// ListenerTable is where the pods' inbound listening sockets are registered
// for the sk_lookup program, keyed by (pod ip, port).
type ListenerTable interface {
	Put(podIP netip.Addr, port uint16, ln syscall.Conn) error
	Delete(podIP netip.Addr, port uint16) error
}

// bpfTables implements classify.OrigDst, ListenerTable and
// dnsproxy.Upstreams on agentd's pinned maps.
type bpfTables struct {
	origDst     *ebpf.Map
	listeners   *ebpf.Map
	dnsUpstream *ebpf.Map
}

// deliveryTable implements podnet.DeliveryTable on the pinned deliveries
// map.
type deliveryTable struct{ m *ebpf.Map }

func (t deliveryTable) Put(app, caller netip.AddrPort) error {
	return bpf.PutDelivery(t.m, app, caller)
}

func (t deliveryTable) Delete(app, caller netip.AddrPort) error {
	return bpf.DeleteDelivery(t.m, app, caller)
}

// LookupDNSUpstream implements dnsproxy.Upstreams.
func (t bpfTables) LookupDNSUpstream(cookie uint64, client netip.AddrPort) (netip.AddrPort, error) {
	return bpf.LookupDNSUpstream(t.dnsUpstream, cookie, client)
}

func (t bpfTables) Lookup(cookie uint64, src, dst netip.AddrPort) (netip.AddrPort, error) {
	return bpf.LookupOrigDst(t.origDst, cookie, src, dst)
}

func (t bpfTables) Put(ip netip.Addr, port uint16, ln syscall.Conn) error {
	return bpf.PutListener(t.listeners, ip, port, ln)
}

func (t bpfTables) Delete(ip netip.Addr, port uint16) error {
	return bpf.DeleteListener(t.listeners, ip, port)
}
