package view

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// EndpointSlice is the discovery/v1 type, aliased for Inputs.
type EndpointSlice = discoveryv1.EndpointSlice

// services converts every service with the endpoints of its slices, its
// routes and its TrafficPolicy (by namespace/name), sorted by
// namespace/name; an ExternalName one by its name only.
//
// An endpoint backed by a pod the view does not have (deleted while its
// slice still lists it) is left out: a node could not verify who answers
// there, and must not reach it in plaintext as if it were outside the
// mesh. A host-network pod's endpoint is an address of its node, outside
// the mesh: it names no workload.
func services(svcs []*corev1.Service, eps []*EndpointSlice, pods map[string]*corev1.Pod, routes map[string][]meshconfig.Route,
	traffic map[string]*meshconfig.TrafficPolicy) ([]meshconfig.Service, map[string][]Warning) {
	bySvc := slicesByService(eps)
	out := make([]meshconfig.Service, 0, len(svcs))
	warn := map[string][]Warning{}
	for _, svc := range svcs {
		ms, ws := serviceOf(svc, bySvc[svc.Namespace+"/"+svc.Name], pods)
		ms.Routes = routes[ms.Key()]
		ms.Traffic = traffic[ms.Key()]
		out = append(out, ms)
		setWarnings(warn, ms.Key(), ws)
	}
	slices.SortFunc(out, func(a, b meshconfig.Service) int { return cmp.Compare(a.Key(), b.Key()) })
	return out, warn
}

// slicesByService groups slices by the namespace/name of their Service.
func slicesByService(eps []*EndpointSlice) map[string][]*EndpointSlice {
	bySvc := map[string][]*EndpointSlice{}
	for _, s := range eps {
		if k := sliceService(s); k != "" {
			bySvc[k] = append(bySvc[k], s)
		}
	}
	return bySvc
}

// sliceService is the namespace/name of s's Service, "" if it names none.
func sliceService(s *EndpointSlice) string {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ""
	}
	return s.Namespace + "/" + name
}

// serviceOf converts one service with the endpoints of its slices; an
// ExternalName one by its name only.
func serviceOf(svc *corev1.Service, eps []*EndpointSlice, pods map[string]*corev1.Pod) (meshconfig.Service, []Warning) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		// Only its name: the node's DNS knows it exists.
		return meshconfig.Service{Name: svc.Name, Namespace: svc.Namespace, ExternalName: cmp.Or(svc.Spec.ExternalName, ".")}, nil
	}
	ms := meshconfig.Service{Name: svc.Name, Namespace: svc.Namespace, VIPs: vips(svc)}
	var ws []Warning
	ms.Ports, ws = ports(svc)
	ms.Endpoints = endpoints(eps, pods)
	return ms, ws
}

// slicePods are the UIDs of the pods eps name, whether or not they are
// endpoints now: a change to one of those pods can change the service.
func slicePods(eps []*EndpointSlice) []string {
	var out []string
	for _, s := range eps {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" && e.TargetRef.UID != "" {
				out = append(out, string(e.TargetRef.UID))
			}
		}
	}
	return out
}

func vips(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil { // skips "None" (headless)
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// ports converts svc's ports, each with the application protocol its
// agentmesh.io/app-protocols entry (by port name, then number) or else its
// appProtocol declares. A malformed annotation or an entry that names no
// port is a Warning; the rest of it applies.
func ports(svc *corev1.Service) ([]meshconfig.ServicePort, []Warning) {
	var out []meshconfig.ServicePort
	var ws []Warning
	ref := corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID}
	var override map[string]string
	if a, ok := svc.Annotations[v1alpha1.AppProtocolsAnnotation]; ok {
		var err error
		override, err = v1alpha1.ParseAppProtocols(a)
		if err != nil {
			ws = append(ws, warning(ref, v1alpha1.AppProtocolsAnnotation+": "+err.Error()+"; those entries are ignored"))
		}
	}
	used := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		sp := meshconfig.ServicePort{Name: p.Name, Port: uint16(p.Port), Protocol: string(p.Protocol)}
		switch {
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0:
			sp.TargetPort = uint16(p.TargetPort.IntVal)
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			sp.TargetPort = 0 // named: resolved per endpoint
		default:
			sp.TargetPort = sp.Port
		}
		if p.AppProtocol != nil {
			sp.AppProtocol = *p.AppProtocol
		}
		num := strconv.Itoa(int(p.Port))
		if v, ok := override[p.Name]; ok && p.Name != "" {
			sp.AppProtocol, used[p.Name] = v, true
		} else if v, ok := override[num]; ok {
			sp.AppProtocol, used[num] = v, true
		}
		out = append(out, sp)
	}
	var unknown []string
	for k := range override {
		if !used[k] {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		ws = append(ws, warning(ref, v1alpha1.AppProtocolsAnnotation+": no port named or numbered "+strings.Join(unknown, ", ")+"; those entries are ignored"))
	}
	return out, ws
}

// endpoints merges the slices' endpoints, one per primary address (a ready
// copy wins over a not-ready one), sorted by address.
func endpoints(eps []*EndpointSlice, pods map[string]*corev1.Pod) []meshconfig.Endpoint {
	byIP := map[netip.Addr]meshconfig.Endpoint{}
	for _, s := range eps {
		named := slicePorts(s)
		for _, e := range s.Endpoints {
			me, ok := endpoint(e, named)
			if !ok {
				continue
			}
			if me.WorkloadUID != "" {
				p := pods[me.WorkloadUID]
				if p == nil || finished(p) {
					continue
				}
				if p.Spec.HostNetwork {
					me.WorkloadUID = ""
				}
			}
			if old, dup := byIP[me.IPs[0]]; dup && old.Ready && !me.Ready {
				continue
			}
			byIP[me.IPs[0]] = me
		}
	}
	keys := slices.SortedFunc(maps.Keys(byIP), func(a, b netip.Addr) int { return a.Compare(b) })
	var out []meshconfig.Endpoint
	for _, k := range keys {
		out = append(out, byIP[k])
	}
	return out
}

func endpoint(e discoveryv1.Endpoint, named map[string]uint16) (meshconfig.Endpoint, bool) {
	var me meshconfig.Endpoint
	for _, a := range e.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			me.IPs = append(me.IPs, ip.Unmap())
		}
	}
	if len(me.IPs) == 0 {
		return me, false
	}
	// The API reads an unset ready condition as ready.
	me.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
	if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
		me.WorkloadUID = string(e.TargetRef.UID)
	}
	if len(named) > 0 {
		me.Ports = named
	}
	return me, true
}

func slicePorts(s *EndpointSlice) map[string]uint16 {
	out := map[string]uint16{}
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		name := "" // the one port of a single-port Service may be unnamed
		if p.Name != nil {
			name = *p.Name
		}
		out[name] = uint16(*p.Port)
	}
	return out
}
