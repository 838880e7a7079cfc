package flow

import (
	"net/netip"
	"slices"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// Pod is a set-up pod as the pipeline sees it: read-only while its
// connections run.
type Pod struct {
	UID, Namespace, Name string
	Cookie               uint64 // of its netns
	Workload             meshconfig.Workload
	ID                   spiffe.ID
	IPs                  []netip.Addr // unmapped
	Net                  podnet.Net   // sockets inside its netns
}

// String is namespace/name.
func (p *Pod) String() string { return p.Namespace + "/" + p.Name }

// IPFor returns the pod's address of dst's family (the source address of
// connections to dst), zero when it has none.
func (p *Pod) IPFor(dst netip.Addr) netip.Addr {
	for _, ip := range p.IPs {
		if ip.Is4() == dst.Unmap().Is4() {
			return ip
		}
	}
	return netip.Addr{}
}

// Owns reports whether ip is one of the pod's addresses.
func (p *Pod) Owns(ip netip.Addr) bool { return slices.Contains(p.IPs, ip.Unmap()) }
