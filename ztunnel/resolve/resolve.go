// Package resolve names the ends of a flow: which workloads (and SPIFFE
// identities) the addresses belong to, in the config in force, and so
// whether an outbound flow goes over HBONE (the destination is in the
// mesh) or passes through. Service VIPs will resolve here too.
package resolve

import (
	"net/netip"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// Resolver reads the config index gives.
type Resolver struct {
	index func() *meshconfig.Index
}

// New returns a Resolver on the config index gives.
func New(index func() *meshconfig.Index) *Resolver { return &Resolver{index: index} }

// Outbound names both ends of a flow pod p opened: the source is p, the
// destination the workload owning the original destination's address; an
// enrolled destination makes it HBONE with that workload's identity, any
// other a passthrough.
func (r *Resolver) Outbound(f *flow.Flow, p *flow.Pod) {
	idx := r.index()
	f.SrcWorkload, f.SrcID = &p.Workload, p.ID
	f.DstWorkload = idx.ByIP(f.Dst.Addr())
	if f.DstWorkload != nil && f.DstWorkload.Enrolled {
		f.Protocol, f.MTLS = flow.HBONE, true
		f.DstID = idx.Config.Identity(f.DstWorkload)
		return
	}
	f.Protocol = flow.Passthrough
}

// HBONE names the ends of an inbound CONNECT: the source is the workload
// owning the peer's address only if its identity is the verified one; the
// destination the workload owning the authority.
func (r *Resolver) HBONE(f *flow.Flow) {
	idx := r.index()
	f.SrcWorkload = MTLSSource(idx, f.SrcID, f.Src.Addr())
	f.DstWorkload = idx.ByIP(f.Dst.Addr())
	if f.DstWorkload != nil {
		f.DstID = idx.Config.Identity(f.DstWorkload)
	}
}

// Plaintext names the ends of a plaintext inbound flow to pod p: the source
// is whatever workload owns the address (unverified), the destination p.
func (r *Resolver) Plaintext(f *flow.Flow, p *flow.Pod) {
	f.SrcWorkload = r.index().ByIP(f.Src.Addr())
	f.DstWorkload, f.DstID = &p.Workload, p.ID
}

// MTLSSource attributes an mTLS peer: the workload owning addr, only if
// its identity is the verified id (else nil).
func MTLSSource(idx *meshconfig.Index, id spiffe.ID, addr netip.Addr) *meshconfig.Workload {
	w := idx.ByIP(addr)
	if w == nil || idx.Config.Identity(w) != id {
		return nil
	}
	return w
}

// UID is w's uid, "" for nil.
func UID(w *meshconfig.Workload) string {
	if w == nil {
		return ""
	}
	return w.UID
}
