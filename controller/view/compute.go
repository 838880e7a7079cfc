// Package view turns the Kubernetes objects the controller watches into the
// mesh's view: every workload with an address, every service with its
// endpoints, and the trust domain. The shared part is computed once per
// change (Compute); per-node selection is done by the stream package.
package view

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Labels that decide enrollment.
const (
	// DataplaneLabel on a namespace ("enabled") enrolls its pods; on a pod
	// ("disabled") opts the pod out.
	DataplaneLabel   = "agentmesh.io/dataplane"
	DataplaneEnabled = "enabled"
	DataplaneOff     = "disabled"
)

// Snapshot is the view shared by all nodes, deterministic for equal inputs:
// workloads sorted by UID, services and policies by namespace/name.
type Snapshot struct {
	TrustDomain string
	// Workloads each carry their Authz (see authorize).
	Workloads []meshconfig.Workload
	Services  []meshconfig.Service
	// Policies are what became of every AgentPolicy (for its status).
	Policies []PolicyState
	// AuthzPolicies are the compiled bodies the workloads' Authz name in
	// PolicyRefs, sorted by Key ("namespace/name"); the stream sends each node the
	// ones its workloads refer to, once.
	AuthzPolicies []policy.Policy
	// Warnings are invalid annotations on namespaces (sorted by name), then
	// on pods (by UID), then on services (by namespace/name).
	Warnings []Warning
	// Routes are what became of every HTTPRoute and GRPCRoute (for their
	// status), sorted by Key.
	Routes []RouteState
	// Traffic is what became of every TrafficPolicy (for its status),
	// sorted by Key.
	Traffic []TrafficState
}

// Inputs are the objects a Snapshot is computed from (lister output).
type Inputs struct {
	TrustDomain string
	Namespaces  []*corev1.Namespace
	Pods        []*corev1.Pod
	Services    []*corev1.Service
	Slices      []*EndpointSlice
	Policies    []*v1alpha1.AgentPolicy
	Routes      RouteInputs
	// TrafficPolicies, in any order.
	TrafficPolicies []*v1alpha1.TrafficPolicy
}

// Compute builds the snapshot of in.
func Compute(in Inputs) *Snapshot {
	s, _ := computeFull(in)
	return s
}

// computeFull builds the snapshot of in and the indexes a Model keeps.
func computeFull(in Inputs) (*Snapshot, *fullIndex) {
	x := &fullIndex{enabled: map[string]bool{}, pods: make(map[string]*corev1.Pod, len(in.Pods))}
	for _, ns := range in.Namespaces {
		x.enabled[ns.Name] = ns.Labels[DataplaneLabel] == DataplaneEnabled
	}
	s := &Snapshot{TrustDomain: in.TrustDomain}
	s.Workloads, x.conflicts = workloads(in.Pods, x.enabled)
	for _, p := range in.Pods {
		x.pods[string(p.UID)] = p
	}
	x.slices = slicesByService(in.Slices)
	lookup := lookupIn(in.Services)
	x.routes = computeRoutes(in.Routes, lookup)
	x.traffic = computeTraffic(in.TrafficPolicies, lookup)
	s.Services, x.svcWarn = services(in.Services, in.Slices, x.pods, x.routes.bySvc, x.traffic.bySvc)
	s.Routes, s.Traffic = x.routes.states, x.traffic.states
	x.authz = authorize(s, in, x.pods)
	for _, key := range slices.Sorted(maps.Keys(x.svcWarn)) {
		s.Warnings = append(s.Warnings, x.svcWarn[key]...)
	}
	return s, x
}

// fullIndex is what computeFull derived besides the snapshot.
type fullIndex struct {
	enabled   map[string]bool             // namespace -> enrolled
	pods      map[string]*corev1.Pod      // every input pod by UID
	slices    map[string][]*EndpointSlice // by service namespace/name
	conflicts bool                        // a pod was left out: another holds its address
	authz     *authzIndex
	svcWarn   map[string][]Warning // of the services, by namespace/name
	routes    *routeTable
	traffic   *trafficTable
}

// lookupIn finds Services in svcs.
func lookupIn(svcs []*corev1.Service) serviceLookup {
	by := make(map[string]*corev1.Service, len(svcs))
	for _, s := range svcs {
		by[s.Namespace+"/"+s.Name] = s
	}
	return func(namespace, name string) *corev1.Service { return by[namespace+"/"+name] }
}

// workloads converts the pods the mesh sees. When two live pods claim
// one address (an address reused while the old pod terminates), the newer
// pod keeps it and the older one is left out, so the view stays valid;
// conflicts reports that this happened.
func workloads(pods []*corev1.Pod, enabled map[string]bool) (out []meshconfig.Workload, conflicts bool) {
	cands := slices.Clone(pods)
	slices.SortFunc(cands, func(a, b *corev1.Pod) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.UID, b.UID)
	})
	taken := map[netip.Addr]bool{}
	for _, p := range cands {
		w, ok := workload(p, enabled[p.Namespace])
		if !ok {
			continue
		}
		if slices.ContainsFunc(w.IPs, func(ip netip.Addr) bool { return taken[ip] }) {
			conflicts = true
			continue
		}
		for _, ip := range w.IPs {
			taken[ip] = true
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b meshconfig.Workload) int { return cmp.Compare(a.UID, b.UID) })
	return out, conflicts
}

// workload converts one pod; ok is false for pods the mesh does not see:
// unscheduled, host-network or finished. A scheduled pod without addresses
// yet is a workload without IPs: its node's agentd learns from it whether
// to capture the pod before the pod's containers start (the CNI gate).
func workload(p *corev1.Pod, nsEnabled bool) (meshconfig.Workload, bool) {
	if p.Spec.NodeName == "" || p.Spec.HostNetwork || finished(p) {
		return meshconfig.Workload{}, false
	}
	ips := podIPs(p)
	sa := cmp.Or(p.Spec.ServiceAccountName, "default")
	return meshconfig.Workload{
		UID:            string(p.UID),
		Name:           p.Name,
		WorkloadName:   workloadName(p),
		Namespace:      p.Namespace,
		ServiceAccount: sa,
		Node:           p.Spec.NodeName,
		IPs:            ips,
		Labels:         p.Labels,
		Enrolled:       nsEnabled && p.Labels[DataplaneLabel] != DataplaneOff,
	}, true
}

// workloadName is what runs p: the name of its controller (a ReplicaSet
// made by a Deployment without its pod-template-hash suffix, so the
// Deployment's name), else p's own name.
func workloadName(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := p.Labels["pod-template-hash"]; h != "" {
				if name, ok := strings.CutSuffix(o.Name, "-"+h); ok && name != "" {
					return name
				}
			}
		}
		return o.Name
	}
	return p.Name
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podIPs returns the pod's valid addresses, primary first, without duplicates.
func podIPs(p *corev1.Pod) []netip.Addr {
	raw := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	var out []netip.Addr
	for _, s := range raw {
		ip, err := netip.ParseAddr(s)
		if err != nil || slices.Contains(out, ip.Unmap()) {
			continue
		}
		out = append(out, ip.Unmap())
	}
	return out
}
