package view

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Routes (GAMMA). An HTTPRoute or GRPCRoute whose parentRef is a Service
// routes the requests sent to that Service: every rule and every match of
// it becomes one meshconfig.Route of the Service, and a Service's routes
// are one list in Gateway API precedence order (routeOrder). A route in
// the Service's namespace is a producer route, for clients in every
// namespace; a route in another namespace is a consumer route, for the
// clients in its own namespace only, which then do not take the producer
// routes. The data plane tells them apart by Route.Name
// ("namespace/name"): a client in namespace N takes the routes from N
// when the Service has any and N is not the Service's namespace, else
// the routes from the Service's namespace.
//
// The mesh writes the status of every such route: one status.parents
// entry per Service parentRef, with controllerName GatewayControllerName
// and the conditions Accepted and ResolvedRefs (RouteState).

// GatewayControllerName is the controllerName of the route status entries
// the mesh writes (Gateway API's "domain/path" form). Entries with another
// controllerName belong to other controllers and are left alone.
const GatewayControllerName gwv1.GatewayController = "agentmesh.io/mesh"

// InvalidBackendNamespace is the namespace of the Backend that stands for
// a backendRef the mesh may not or cannot use (RefNotPermitted,
// InvalidKind). It can never name a Service (Kubernetes namespace names
// have no dots), so the data plane answers the share of requests that
// would have gone there with 500, as Gateway API asks. A backendRef to a
// Service that does not exist, or a port it lacks (BackendNotFound), keeps
// its real name and port: the data plane does not have them either.
const InvalidBackendNamespace = "agentmesh.invalid"

// RouteInputs are the Gateway API objects routes are computed from.
type RouteInputs struct {
	HTTPRoutes []*gwv1.HTTPRoute
	GRPCRoutes []*gwv1.GRPCRoute
	Grants     []*gwv1beta1.ReferenceGrant
}

// routeTable is what the routes make: each Service's routes, each route
// object's state, and what they read of which Services.
type routeTable struct {
	bySvc  map[string][]meshconfig.Route // by Service namespace/name, sorted
	states []RouteState                  // by Key
	// facts are the serviceFacts of every Service (by namespace/name) the
	// computation looked at, as they were: a change to them recomputes.
	facts map[string]string
}

// serviceLookup returns the Service namespace/name, or nil.
type serviceLookup func(namespace, name string) *corev1.Service

// computeRoutes converts every route of in over the Services svc finds.
func computeRoutes(in RouteInputs, svc serviceLookup) *routeTable {
	t := &routeTable{bySvc: map[string][]meshconfig.Route{}, facts: map[string]string{}}
	rc := &routeContext{grants: in.Grants, svc: func(ns, name string) *corev1.Service {
		s := svc(ns, name)
		t.facts[ns+"/"+name] = serviceFacts(s)
		return s
	}}
	var objs []*routeObject
	for _, r := range in.HTTPRoutes {
		objs = append(objs, httpRouteObject(r))
	}
	for _, r := range in.GRPCRoutes {
		objs = append(objs, grpcRouteObject(r))
	}
	slices.SortFunc(objs, func(a, b *routeObject) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.meta.Namespace, b.meta.Namespace), cmp.Compare(a.meta.Name, b.meta.Name))
	})
	flat := map[string][]flatRoute{}
	for _, o := range objs {
		st := rc.resolve(o, flat)
		t.states = append(t.states, st)
	}
	for key, fs := range flat {
		slices.SortStableFunc(fs, routeOrder)
		rs := make([]meshconfig.Route, len(fs))
		for i := range fs {
			rs[i] = fs[i].route
		}
		t.bySvc[key] = rs
	}
	return t
}

// serviceFacts is what routes read of a Service: whether it exists, has
// a cluster IP, and its ports.
func serviceFacts(s *corev1.Service) string {
	if s == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%d", s.Spec.Type, len(vips(s)))
	for _, p := range s.Spec.Ports {
		fmt.Fprintf(&b, "|%s=%d", p.Name, p.Port)
	}
	return b.String()
}

// dependsOn reports whether t was computed from what it knew of the
// Service key (namespace/name).
func (t *routeTable) dependsOn(key string) bool {
	_, ok := t.facts[key]
	return ok
}

// changedServices are the Services whose routes differ between t and u.
func (t *routeTable) changedServices(u *routeTable) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(t.bySvc)) {
		if !reflect.DeepEqual(t.bySvc[k], u.bySvc[k]) {
			out = append(out, k)
		}
	}
	for k := range u.bySvc {
		if _, ok := t.bySvc[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// routeObject is an HTTPRoute or GRPCRoute as the mesh reads it.
type routeObject struct {
	kind    string
	meta    *metav1.ObjectMeta
	parents []gwv1.ParentReference
	rules   []routeRule
	// unsupported is why the mesh cannot serve the route as written
	// (Accepted False, UnsupportedValue); "" when it can.
	unsupported string
}

// routeRule is one rule, its matches converted.
type routeRule struct {
	matches                 []meshconfig.RouteMatch
	backends                []gwv1.BackendRef
	timeout, backendTimeout time.Duration
	retry                   *meshconfig.Retry
}

// flatRoute is one Route with the index of its match, for ordering.
type flatRoute struct {
	route   meshconfig.Route
	created metav1.Time
	match   int
}

// routeOrder is Gateway API's precedence: an Exact path first, then
// PathPrefix by the length of the prefix, then (implementation-specific)
// RegularExpression paths, then matches of any path; within those a
// method match first, then more header matches, then more query
// parameter matches; then the older route (creationTimestamp), then the
// route by namespace/name (and kind), then rule order, then match order.
func routeOrder(a, b flatRoute) int {
	ma, mb := &a.route.Match, &b.route.Match
	return cmp.Or(
		cmp.Compare(pathRank(ma), pathRank(mb)),
		cmp.Compare(len(mb.Path)*isPrefix(mb), len(ma.Path)*isPrefix(ma)),
		cmp.Compare(methodRank(ma), methodRank(mb)),
		cmp.Compare(len(mb.Headers), len(ma.Headers)),
		cmp.Compare(len(mb.Query), len(ma.Query)),
		a.created.Compare(b.created.Time),
		cmp.Compare(a.route.Name, b.route.Name),
		cmp.Compare(a.route.Kind, b.route.Kind),
		cmp.Compare(a.route.Rule, b.route.Rule),
		cmp.Compare(a.match, b.match),
	)
}

func pathRank(m *meshconfig.RouteMatch) int {
	switch m.PathType {
	case meshconfig.PathExact:
		return 0
	case meshconfig.PathPrefix:
		return 1
	case meshconfig.PathRegex:
		return 2
	}
	return 3
}

func isPrefix(m *meshconfig.RouteMatch) int {
	if m.PathType == meshconfig.PathPrefix {
		return 1
	}
	return 0
}

func methodRank(m *meshconfig.RouteMatch) int {
	if m.Method != "" {
		return 0
	}
	return 1
}
