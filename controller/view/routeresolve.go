package view

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// routeContext resolves routes' references over one computation's
// inputs.
type routeContext struct {
	grants []*gwv1beta1.ReferenceGrant
	svc    serviceLookup
}

// refProblem is why a backendRef cannot be used: a ResolvedRefs reason
// and a message.
type refProblem struct {
	reason gwv1.RouteConditionReason
	msg    string
}

// resolve turns o into the Routes of the Services it attaches to (added
// to flat, by Service key) and its status.
func (rc *routeContext) resolve(o *routeObject, flat map[string][]flatRoute) RouteState {
	st := RouteState{Kind: o.kind, Namespace: o.meta.Namespace, Name: o.meta.Name,
		UID: string(o.meta.UID), Generation: o.meta.Generation}
	backends, problems := rc.backends(o)
	resolved := resolvedRefs(problems, o.meta.Generation)
	for i := range o.parents {
		ref := &o.parents[i]
		if !isCoreService(ref.Group, ref.Kind, false) {
			continue // a Gateway's, or another kind's: not the mesh's
		}
		ps := gwv1.RouteParentStatus{ParentRef: *ref, ControllerName: GatewayControllerName}
		port, accepted := rc.attach(o, ref)
		ps.Conditions = []metav1.Condition{accepted, resolved}
		st.Parents = append(st.Parents, ps)
		if accepted.Status != metav1.ConditionTrue {
			continue
		}
		key := string(deref(ref.Namespace, gwv1.Namespace(o.meta.Namespace))) + "/" + string(ref.Name)
		flat[key] = append(flat[key], o.flatten(port, backends)...)
	}
	return st
}

// flatten makes o's Routes for a parent on port (0: every port).
func (o *routeObject) flatten(port uint16, backends [][]meshconfig.Backend) []flatRoute {
	var out []flatRoute
	name := o.meta.Namespace + "/" + o.meta.Name
	for i, r := range o.rules {
		for j, m := range r.matches {
			out = append(out, flatRoute{created: o.meta.CreationTimestamp, match: j, route: meshconfig.Route{
				Name: name, Kind: o.kind, Rule: i, Port: port, Match: m, Backends: backends[i],
				Timeout: r.timeout, BackendTimeout: r.backendTimeout, Retry: r.retry}})
		}
	}
	return out
}

// attach decides whether o attaches to the Service ref names, and on
// which port: its Accepted condition.
func (rc *routeContext) attach(o *routeObject, ref *gwv1.ParentReference) (port uint16, c metav1.Condition) {
	ns := string(deref(ref.Namespace, gwv1.Namespace(o.meta.Namespace)))
	key := ns + "/" + string(ref.Name)
	no := func(reason gwv1.RouteConditionReason, format string, args ...any) (uint16, metav1.Condition) {
		return 0, condition(gwv1.RouteConditionAccepted, false, reason, fmt.Sprintf(format, args...), o.meta.Generation)
	}
	svc := rc.svc(ns, string(ref.Name))
	switch {
	case svc == nil:
		return no(gwv1.RouteReasonNoMatchingParent, "Service %s does not exist", key)
	case svc.Spec.Type == corev1.ServiceTypeExternalName || len(vips(svc)) == 0:
		return no(gwv1.RouteReasonUnsupportedValue, "Service %s has no cluster IP (headless or ExternalName): the mesh routes the requests to a Service's cluster IP only", key)
	}
	if ref.SectionName != nil || ref.Port != nil {
		p := servicePort(svc, ref)
		if p == nil {
			return no(gwv1.RouteReasonNoMatchingParent, "Service %s has no port%s", key, describePortRef(ref))
		}
		port = uint16(p.Port)
	}
	if o.unsupported != "" {
		return no(gwv1.RouteReasonUnsupportedValue, "%s; the route is not used", o.unsupported)
	}
	who := "producer route: applies to requests to it from every namespace"
	if ns != o.meta.Namespace {
		who = "consumer route: applies to requests to it from namespace " + o.meta.Namespace + " only, instead of the Service's own routes"
	}
	return port, condition(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted,
		fmt.Sprintf("routes requests to Service %s (%s)", key, who), o.meta.Generation)
}

// servicePort is the port of svc that ref's port and sectionName (a port
// name) both name, or nil.
func servicePort(svc *corev1.Service, ref *gwv1.ParentReference) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (ref.Port == nil || *ref.Port == p.Port) && (ref.SectionName == nil || string(*ref.SectionName) == p.Name) {
			return p
		}
	}
	return nil
}

func describePortRef(ref *gwv1.ParentReference) string {
	var parts []string
	if ref.Port != nil {
		parts = append(parts, fmt.Sprintf(" %d", *ref.Port))
	}
	if ref.SectionName != nil {
		parts = append(parts, fmt.Sprintf(" named %q", *ref.SectionName))
	}
	return strings.Join(parts, "")
}

// isCoreService reports whether group and kind name a core Service. A
// parentRef's group and kind default to a Gateway's, a backendRef's to
// Service (as the API defaults them).
func isCoreService(group *gwv1.Group, kind *gwv1.Kind, backend bool) bool {
	dg, dk := gwv1.Group(gwv1.GroupName), gwv1.Kind("Gateway")
	if backend {
		dg, dk = "", "Service"
	}
	g, k := deref(group, dg), deref(kind, dk)
	return (g == "" || g == "core") && k == "Service"
}

// condition makes a condition of a route parent status.
func condition(t gwv1.RouteConditionType, ok bool, reason gwv1.RouteConditionReason, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(t), Status: st, Reason: string(reason), Message: msg, ObservedGeneration: gen}
}

// resolvedRefs is the ResolvedRefs condition over problems: True, or
// False with the first problem's reason and every problem in the message
// (the first few).
func resolvedRefs(problems []refProblem, gen int64) metav1.Condition {
	if len(problems) == 0 {
		return condition(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "every backendRef resolved", gen)
	}
	const maxShown = 8
	var msgs []string
	for i, p := range problems {
		if i == maxShown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(problems)-maxShown))
			break
		}
		msgs = append(msgs, p.msg)
	}
	msg := strings.Join(msgs, "; ") + "; requests that would go to these backends get 500"
	return condition(gwv1.RouteConditionResolvedRefs, false, problems[0].reason, msg, gen)
}

// backends resolves the backendRefs of every rule of o.
func (rc *routeContext) backends(o *routeObject) ([][]meshconfig.Backend, []refProblem) {
	out := make([][]meshconfig.Backend, len(o.rules))
	var problems []refProblem
	for i, r := range o.rules {
		for j := range r.backends {
			b, p := rc.backend(o, &r.backends[j])
			if p != nil {
				p.msg = fmt.Sprintf("spec.rules[%d].backendRefs[%d]: %s", i, j, p.msg)
				problems = append(problems, *p)
			}
			out[i] = append(out[i], b)
		}
	}
	return out, problems
}

// backend resolves one backendRef of o: weight 1 when it has none. One
// the mesh may not or cannot use keeps its weight, so that its share of
// the requests gets 500 (see InvalidBackendNamespace).
func (rc *routeContext) backend(o *routeObject, ref *gwv1.BackendRef) (meshconfig.Backend, *refProblem) {
	ns := string(deref(ref.Namespace, gwv1.Namespace(o.meta.Namespace)))
	name := string(ref.Name)
	port := uint16(min(max(deref(ref.Port, 0), 0), 65535)) // checked below
	b := meshconfig.Backend{Service: ns + "/" + name, Port: port, Weight: uint32(max(deref(ref.Weight, 1), 0))}
	invalid := func(reason gwv1.RouteConditionReason, format string, args ...any) (meshconfig.Backend, *refProblem) {
		b.Service, b.Port = InvalidBackendNamespace+"/"+strings.ToLower(string(reason)), max(port, 1)
		return b, &refProblem{reason: reason, msg: fmt.Sprintf(format, args...)}
	}
	if !isCoreService(ref.Group, ref.Kind, true) {
		return invalid(gwv1.RouteReasonInvalidKind, "%s %s: the mesh routes to Services only",
			kindOf(ref.Group, ref.Kind), b.Service)
	}
	if p := deref(ref.Port, 0); p < 1 || p > 65535 {
		return invalid(gwv1.RouteReasonUnsupportedValue, "Service %s: a backendRef to a Service needs a port (1-65535)", b.Service)
	}
	if ns != o.meta.Namespace && !rc.granted(o.kind, o.meta.Namespace, ns, name) {
		return invalid(gwv1.RouteReasonRefNotPermitted, "Service %s: no ReferenceGrant in namespace %s lets %ss of namespace %s refer to it",
			b.Service, ns, o.kind, o.meta.Namespace)
	}
	svc := rc.svc(ns, name)
	switch {
	case svc == nil:
		return b, &refProblem{gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s does not exist", b.Service)}
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return invalid(gwv1.RouteReasonInvalidKind, "Service %s is of type ExternalName, which the mesh does not route to", b.Service)
	case !hasPort(svc, int32(port)):
		return b, &refProblem{gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s has no port %d", b.Service, port)}
	}
	return b, nil
}

func hasPort(svc *corev1.Service, port int32) bool {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

func kindOf(group *gwv1.Group, kind *gwv1.Kind) string {
	k := string(deref(kind, "Service"))
	if g := deref(group, ""); g != "" {
		return k + "." + string(g)
	}
	return k
}

// granted reports whether a ReferenceGrant in namespace toNS lets routes
// of kind in namespace fromNS refer to the Service toNS/name.
func (rc *routeContext) granted(kind, fromNS, toNS, name string) bool {
	for _, g := range rc.grants {
		if g.Namespace != toNS {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			from = from || (f.Group == gwv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == fromNS)
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if (t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name) {
				return true
			}
		}
	}
	return false
}

// RouteState is what the controller made of one HTTPRoute or GRPCRoute:
// the input of its status.
type RouteState struct {
	Kind, Namespace, Name string
	UID                   string
	Generation            int64
	// Parents are the mesh's status.parents entries: one per parentRef
	// that is a Service, in spec order, with controllerName
	// GatewayControllerName and the conditions Accepted and ResolvedRefs
	// (without lastTransitionTime, which the status writer keeps or
	// sets). None: the route has no Service parent, and entries the mesh
	// wrote before are to go.
	Parents []gwv1.RouteParentStatus
}

// Key is kind/namespace/name.
func (s *RouteState) Key() string { return s.Kind + "/" + s.Namespace + "/" + s.Name }
