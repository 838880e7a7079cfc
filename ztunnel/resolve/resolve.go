// Package resolve names the ends of a flow: which workloads (and SPIFFE
// identities) the addresses belong to, in the config in force, and so
// whether an outbound flow goes over HBONE (the destination is in the
// mesh) or passes through; and a Service's virtual IP to the endpoints a
// connection to it may go to (the balancer picks one).
package resolve

import (
	"net/netip"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// Resolver reads the config index gives.
type Resolver struct {
	index func() *meshconfig.Index
}

// New returns a Resolver on the config index gives.
func New(index func() *meshconfig.Index) *Resolver { return &Resolver{index: index} }

// Outbound names both ends of a flow pod p opened: the source is p. When
// the original destination is a Service VIP, f.Service (and ServicePort,
// nil for a port the Service does not have) is set and the destination is
// left to the endpoint chosen; see Endpoints. Otherwise the destination is
// the workload owning the address: an enrolled one makes it HBONE with
// that workload's identity, any other a passthrough.
func (r *Resolver) Outbound(f *flow.Flow, p *flow.Pod) {
	idx := r.index()
	f.SrcWorkload, f.SrcID = &p.Workload, p.ID
	if s := idx.ServiceByVIP(f.Dst.Addr()); s != nil {
		f.Service, f.ServicePort = s, s.Port(f.Dst.Port())
		return
	}
	f.DstWorkload = idx.ByIP(f.Dst.Addr())
	if f.DstWorkload != nil && f.DstWorkload.Enrolled {
		f.Protocol, f.MTLS = flow.HBONE, true
		f.DstID = idx.Config.Identity(f.DstWorkload)
		return
	}
	f.Protocol = flow.Passthrough
}

// Endpoints are the backends of f's service port as this node reaches
// them, one per pod (a dual-stack pod is in the Service's slices of both
// families: its address of the VIP's family is used when it has one),
// with the pod's workload when the mesh knows it. Endpoints without a
// port for a named target port are left out, and so are those backed by a
// pod the config does not have (gone, or not known yet).
//
// They are read from the config in force, not from the one f was resolved
// with: a retry sees the endpoints a newer config brought.
func (r *Resolver) Endpoints(f *flow.Flow) []balance.Endpoint {
	idx := r.index()
	if f.Service == nil || f.ServicePort == nil {
		return nil
	}
	s := idx.Service(f.Service.Namespace, f.Service.Name)
	if s == nil {
		return nil
	}
	return Endpoints(idx, s, s.Port(f.ServicePort.Port), f.Dst.Addr())
}

// Endpoints is Resolver.Endpoints on idx, for service port sp of s reached
// through vip.
func Endpoints(idx *meshconfig.Index, s *meshconfig.Service, sp *meshconfig.ServicePort, vip netip.Addr) []balance.Endpoint {
	if s == nil || sp == nil {
		return nil
	}
	want4 := vip.Unmap().Is4()
	out := make([]balance.Endpoint, 0, len(s.Endpoints))
	at := map[string]int{} // key -> index in out
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		port := e.TargetPort(sp)
		if port == 0 || len(e.IPs) == 0 {
			continue
		}
		ip := e.IPs[0]
		for _, a := range e.IPs {
			if a.Is4() == want4 {
				ip = a
				break
			}
		}
		w := idx.ByUID(e.WorkloadUID)
		switch {
		case w == nil && e.WorkloadUID != "":
			// A pod this config does not have: who answers there cannot
			// be verified, and it must not get plaintext as if it were
			// outside the mesh.
			continue
		case w == nil:
			w = idx.ByIP(ip) // an address the mesh may know all the same
		}
		k := ip.String()
		if w != nil {
			k = w.UID
		}
		be := balance.Endpoint{Key: k, Addr: netip.AddrPortFrom(ip, port), Workload: w, Ready: e.Ready}
		if j, dup := at[k]; dup {
			// The pod's other family: keep the address of the VIP's
			// family, and the pod ready if either slice says so.
			prev := &out[j]
			if prev.Addr.Addr().Is4() != want4 && ip.Is4() == want4 {
				be.Ready = be.Ready || prev.Ready
				*prev = be
			} else {
				prev.Ready = prev.Ready || be.Ready
			}
			continue
		}
		at[k] = len(out)
		out = append(out, be)
	}
	return out
}

// Endpoint names f's destination as endpoint e: its workload and identity,
// HBONE for a pod in the mesh, passthrough (plain TCP to e) for any other.
func (r *Resolver) Endpoint(f *flow.Flow, e *balance.Endpoint) {
	f.Upstream = e.Addr
	f.DstWorkload, f.DstID, f.MTLS = e.Workload, spiffe.ID{}, false
	f.Protocol = flow.Passthrough
	if e.Mesh() {
		f.Protocol, f.MTLS = flow.HBONE, true
		f.DstID = r.index().Config.Identity(e.Workload)
	}
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

// Plaintext names the ends of a plaintext inbound flow to pod p: the
// destination is p; the source is the workload owning the address (an
// unverified claim) only when that workload is outside the mesh, as
// NetworkPolicy would attribute it. A pod in the mesh never sends
// plaintext to a mesh pod (its ztunnel uses HBONE, Services included), so
// plaintext from such an address is a spoofed or recycled address, or a
// pod whose capture is off: it gets no workload (only ipBlocks can admit
// it) and impostor returns the workload whose address it used.
func (r *Resolver) Plaintext(f *flow.Flow, p *flow.Pod) (impostor *meshconfig.Workload) {
	f.DstWorkload, f.DstID = &p.Workload, p.ID
	w := r.index().ByIP(f.Src.Addr())
	if w != nil && w.Enrolled {
		return w
	}
	f.SrcWorkload = w
	return nil
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
