package view

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// svcParent is a parentRef to the Service name (in the route's namespace
// unless ns says otherwise; port 0: none).
func svcParent(name, ns string, port int32) gwv1.ParentReference {
	p := gwv1.ParentReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
	if ns != "" {
		p.Namespace = ptr(gwv1.Namespace(ns))
	}
	if port != 0 {
		p.Port = ptr(port)
	}
	return p
}

// backendRef is a backendRef to the Service ns/name port (ns "": the
// route's; weight < 0: none).
func backendRef(ns, name string, port, weight int32) gwv1.BackendRef {
	b := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr(port)}}
	if ns != "" {
		b.Namespace = ptr(gwv1.Namespace(ns))
	}
	if weight >= 0 {
		b.Weight = ptr(weight)
	}
	return b
}

func httpBackends(bs ...gwv1.BackendRef) []gwv1.HTTPBackendRef {
	out := make([]gwv1.HTTPBackendRef, len(bs))
	for i, b := range bs {
		out[i] = gwv1.HTTPBackendRef{BackendRef: b}
	}
	return out
}

// httpRoute makes an HTTPRoute of generation 1, created at second created.
func httpRoute(ns, name string, created int64, parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Generation: 1,
			CreationTimestamp: metav1.NewTime(time.Unix(created, 0))},
		Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func grpcRoute(ns, name string, created int64, parents []gwv1.ParentReference, rules ...gwv1.GRPCRouteRule) *gwv1.GRPCRoute {
	return &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Generation: 1,
			CreationTimestamp: metav1.NewTime(time.Unix(created, 0))},
		Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func pathMatch(typ gwv1.PathMatchType, v string) gwv1.HTTPRouteMatch {
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: &typ, Value: &v}}
}

func grant(ns string, fromKind, fromNS string, to *string) *gwv1beta1.ReferenceGrant {
	g := &gwv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g-" + fromNS},
		Spec: gwv1beta1.ReferenceGrantSpec{
			From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: gwv1.Kind(fromKind), Namespace: gwv1.Namespace(fromNS)}},
			To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}}
	if to != nil {
		g.Spec.To[0].Name = (*gwv1.ObjectName)(to)
	}
	return g
}

// routesOf computes the routes of in over svcs and checks that every
// Service's routes pass the data plane's validation.
func routesOf(t *testing.T, in RouteInputs, svcs ...*corev1.Service) *routeTable {
	t.Helper()
	rt := computeRoutes(in, lookupIn(svcs))
	cfg := meshconfig.Config{TrustDomain: "td"}
	for key, rs := range rt.bySvc {
		ns, name, _ := strings.Cut(key, "/")
		cfg.Services = append(cfg.Services, meshconfig.Service{Namespace: ns, Name: name, Routes: rs})
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the routes do not validate: %v", err)
	}
	return rt
}

// cond finds the condition typ of the first parent of st.
func cond(t *testing.T, st RouteState, typ gwv1.RouteConditionType) metav1.Condition {
	t.Helper()
	if len(st.Parents) == 0 {
		t.Fatalf("%s has no parent status", st.Key())
	}
	for _, c := range st.Parents[0].Conditions {
		if c.Type == string(typ) {
			return c
		}
	}
	t.Fatalf("%s has no condition %s", st.Key(), typ)
	return metav1.Condition{}
}

var anyPath = meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/"}

// TestHTTPRouteMatches: every match of every rule becomes one Route, with
// the API's defaults (a rule without matches, a match without path).
func TestHTTPRouteMatches(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("web", "", 0)}
	be := httpBackends(backendRef("", "web", 80, -1))
	get := gwv1.HTTPMethodGet
	regex := gwv1.HeaderMatchRegularExpression
	qregex := gwv1.QueryParamMatchRegularExpression
	for _, tc := range []struct {
		name  string
		rules []gwv1.HTTPRouteRule
		want  []meshconfig.RouteMatch
	}{
		{"no matches", []gwv1.HTTPRouteRule{{BackendRefs: be}}, []meshconfig.RouteMatch{anyPath}},
		{"empty match", []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{{}}, BackendRefs: be}}, []meshconfig.RouteMatch{anyPath}},
		{"exact", []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchExact, "/a")}, BackendRefs: be}},
			[]meshconfig.RouteMatch{{PathType: meshconfig.PathExact, Path: "/a"}}},
		{"regex", []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchRegularExpression, "/v[0-9]+/.*")}, BackendRefs: be}},
			[]meshconfig.RouteMatch{{PathType: meshconfig.PathRegex, Path: "/v[0-9]+/.*"}}},
		{"method headers query", []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{{
			Method:      &get,
			Headers:     []gwv1.HTTPHeaderMatch{{Name: "X-Canary", Value: "1"}, {Type: &regex, Name: "X-User", Value: "^a.*"}},
			QueryParams: []gwv1.HTTPQueryParamMatch{{Name: "v", Value: "2"}, {Type: &qregex, Name: "q", Value: "x+"}},
		}}, BackendRefs: be}}, []meshconfig.RouteMatch{{PathType: meshconfig.PathPrefix, Path: "/", Method: "GET",
			Headers: []meshconfig.ValueMatch{{Name: "X-Canary", Value: "1"}, {Name: "X-User", Value: "^a.*", Regex: true}},
			Query:   []meshconfig.ValueMatch{{Name: "v", Value: "2"}, {Name: "q", Value: "x+", Regex: true}}}}},
		{"two matches", []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/b"), pathMatch(gwv1.PathMatchPathPrefix, "/a")}, BackendRefs: be}},
			[]meshconfig.RouteMatch{{PathType: meshconfig.PathPrefix, Path: "/b"}, {PathType: meshconfig.PathPrefix, Path: "/a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := routesOf(t, RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{httpRoute("a", "r", 1, parent, tc.rules...)}}, svc("a", "web"))
			var got []meshconfig.RouteMatch
			for _, r := range rt.bySvc["a/web"] {
				got = append(got, r.Match)
				if r.Name != "a/r" || r.Kind != KindHTTPRoute || len(r.Backends) != 1 {
					t.Errorf("route %+v: want name a/r, kind HTTPRoute, one backend", r)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("matches (-want +got):\n%s", diff)
			}
			if c := cond(t, rt.states[0], gwv1.RouteConditionAccepted); c.Status != metav1.ConditionTrue {
				t.Errorf("Accepted %+v, want True", c)
			}
		})
	}
}

// TestGRPCRouteMatches: a gRPC method match is a path match.
func TestGRPCRouteMatches(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("api", "", 0)}
	re := gwv1.GRPCMethodMatchRegularExpression
	for _, tc := range []struct {
		name  string
		match *gwv1.GRPCMethodMatch
		want  meshconfig.RouteMatch
	}{
		{"none", nil, meshconfig.RouteMatch{}},
		{"service and method", &gwv1.GRPCMethodMatch{Service: ptr("pkg.Greeter"), Method: ptr("Hello")},
			meshconfig.RouteMatch{PathType: meshconfig.PathExact, Path: "/pkg.Greeter/Hello"}},
		{"service", &gwv1.GRPCMethodMatch{Service: ptr("pkg.Greeter")},
			meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/pkg.Greeter/"}},
		{"method", &gwv1.GRPCMethodMatch{Method: ptr("Hello")},
			meshconfig.RouteMatch{PathType: meshconfig.PathRegex, Path: "/[^/]+/Hello"}},
		{"regex", &gwv1.GRPCMethodMatch{Type: &re, Service: ptr(`pkg\..*`)},
			meshconfig.RouteMatch{PathType: meshconfig.PathRegex, Path: `/(?:pkg\..*)/[^/]+`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := grpcRoute("a", "g", 1, parent, gwv1.GRPCRouteRule{
				Matches:     []gwv1.GRPCRouteMatch{{Method: tc.match, Headers: []gwv1.GRPCHeaderMatch{{Name: "x-tenant", Value: "t1"}}}},
				BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backendRef("", "api", 80, -1)}},
			})
			rt := routesOf(t, RouteInputs{GRPCRoutes: []*gwv1.GRPCRoute{r}}, svc("a", "api"))
			tc.want.Headers = []meshconfig.ValueMatch{{Name: "x-tenant", Value: "t1"}}
			want := []meshconfig.Route{{Name: "a/g", Kind: KindGRPCRoute, Match: tc.want,
				Backends: []meshconfig.Backend{{Service: "a/api", Port: 80, Weight: 1}}}}
			if diff := cmp.Diff(want, rt.bySvc["a/api"]); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRouteOrder: a Service's routes, from several route objects, come in
// Gateway API precedence order.
func TestRouteOrder(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("web", "", 0)}
	be := httpBackends(backendRef("", "web", 80, -1))
	post := gwv1.HTTPMethodPost
	rule := func(ms ...gwv1.HTTPRouteMatch) gwv1.HTTPRouteRule {
		return gwv1.HTTPRouteRule{Matches: ms, BackendRefs: be}
	}
	withHeaders := func(m gwv1.HTTPRouteMatch, n int) gwv1.HTTPRouteMatch {
		for i := range n {
			m.Headers = append(m.Headers, gwv1.HTTPHeaderMatch{Name: gwv1.HTTPHeaderName(string(rune('a' + i))), Value: "1"})
		}
		return m
	}
	withQuery := func(m gwv1.HTTPRouteMatch) gwv1.HTTPRouteMatch {
		m.QueryParams = []gwv1.HTTPQueryParamMatch{{Name: "q", Value: "1"}}
		return m
	}
	withMethod := func(m gwv1.HTTPRouteMatch) gwv1.HTTPRouteMatch { m.Method = &post; return m }
	in := RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{
		// Newest: loses every tie on age.
		httpRoute("a", "new", 30, parent, rule(pathMatch(gwv1.PathMatchPathPrefix, "/api"))),
		httpRoute("a", "old", 10, parent,
			rule(pathMatch(gwv1.PathMatchPathPrefix, "/"), pathMatch(gwv1.PathMatchRegularExpression, "/x.*")),
			rule(pathMatch(gwv1.PathMatchPathPrefix, "/api")),
			rule(withHeaders(pathMatch(gwv1.PathMatchPathPrefix, "/api/v1"), 1), withHeaders(pathMatch(gwv1.PathMatchPathPrefix, "/api/v1"), 2)),
			rule(withMethod(pathMatch(gwv1.PathMatchPathPrefix, "/api/v1")), withQuery(pathMatch(gwv1.PathMatchPathPrefix, "/api/v1"))),
			rule(pathMatch(gwv1.PathMatchExact, "/api")),
		),
		// As old as "old": the name decides.
		httpRoute("a", "b-same-age", 10, parent, rule(pathMatch(gwv1.PathMatchPathPrefix, "/api"))),
	}}
	rt := routesOf(t, in, svc("a", "web"))
	type key struct {
		Name string
		Rule int
		Path string
	}
	var got []key
	for _, r := range rt.bySvc["a/web"] {
		got = append(got, key{r.Name, r.Rule, r.Match.PathType + " " + r.Match.Path})
	}
	want := []key{
		{"a/old", 4, "Exact /api"},
		{"a/old", 3, "PathPrefix /api/v1"}, // method
		{"a/old", 2, "PathPrefix /api/v1"}, // 2 headers
		{"a/old", 2, "PathPrefix /api/v1"}, // 1 header
		{"a/old", 3, "PathPrefix /api/v1"}, // query
		{"a/b-same-age", 0, "PathPrefix /api"},
		{"a/old", 1, "PathPrefix /api"},
		{"a/new", 0, "PathPrefix /api"},
		{"a/old", 0, "PathPrefix /"},
		{"a/old", 0, "RegularExpression /x.*"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if hs := rt.bySvc["a/web"][2].Match.Headers; len(hs) != 2 {
		t.Errorf("third route has %d header matches, want 2", len(hs))
	}
}

// TestRouteBackends: weights default to 1; a backendRef the mesh cannot
// use keeps its share, which the data plane answers with 500, and sets
// ResolvedRefs False with Gateway API's reason.
func TestRouteBackends(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("web", "", 0)}
	other := gwv1.Kind("Bucket")
	otherGroup := gwv1.Group("storage.example.com")
	for _, tc := range []struct {
		name   string
		refs   []gwv1.BackendRef
		grants []*gwv1beta1.ReferenceGrant
		want   []meshconfig.Backend
		reason gwv1.RouteConditionReason // of ResolvedRefs
	}{
		{"weights", []gwv1.BackendRef{backendRef("", "v1", 80, 90), backendRef("", "v2", 80, 10), backendRef("", "web", 80, -1), backendRef("", "web", 80, 0)}, nil,
			[]meshconfig.Backend{{Service: "a/v1", Port: 80, Weight: 90}, {Service: "a/v2", Port: 80, Weight: 10}, {Service: "a/web", Port: 80, Weight: 1}, {Service: "a/web", Port: 80}},
			gwv1.RouteReasonResolvedRefs},
		{"missing service", []gwv1.BackendRef{backendRef("", "v1", 80, 1), backendRef("", "v3", 80, 1)}, nil,
			[]meshconfig.Backend{{Service: "a/v1", Port: 80, Weight: 1}, {Service: "a/v3", Port: 80, Weight: 1}},
			gwv1.RouteReasonBackendNotFound},
		{"missing port", []gwv1.BackendRef{backendRef("", "v1", 9090, 1)}, nil,
			[]meshconfig.Backend{{Service: "a/v1", Port: 9090, Weight: 1}}, gwv1.RouteReasonBackendNotFound},
		{"cross namespace without grant", []gwv1.BackendRef{backendRef("b", "v1", 80, 5)}, nil,
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/refnotpermitted", Port: 80, Weight: 5}}, gwv1.RouteReasonRefNotPermitted},
		{"grant for another kind", []gwv1.BackendRef{backendRef("b", "v1", 80, 5)}, []*gwv1beta1.ReferenceGrant{grant("b", KindGRPCRoute, "a", nil)},
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/refnotpermitted", Port: 80, Weight: 5}}, gwv1.RouteReasonRefNotPermitted},
		{"grant for another service", []gwv1.BackendRef{backendRef("b", "v1", 80, 5)}, []*gwv1beta1.ReferenceGrant{grant("b", KindHTTPRoute, "a", ptr("v2"))},
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/refnotpermitted", Port: 80, Weight: 5}}, gwv1.RouteReasonRefNotPermitted},
		{"granted", []gwv1.BackendRef{backendRef("b", "v1", 80, 5)}, []*gwv1beta1.ReferenceGrant{grant("b", KindHTTPRoute, "a", ptr("v1"))},
			[]meshconfig.Backend{{Service: "b/v1", Port: 80, Weight: 5}}, gwv1.RouteReasonResolvedRefs},
		{"grant in the wrong namespace", []gwv1.BackendRef{backendRef("b", "v1", 80, 5)}, []*gwv1beta1.ReferenceGrant{grant("a", KindHTTPRoute, "a", nil)},
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/refnotpermitted", Port: 80, Weight: 5}}, gwv1.RouteReasonRefNotPermitted},
		{"other kind", []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{Group: &otherGroup, Kind: &other, Name: "b"}}}, nil,
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/invalidkind", Port: 1, Weight: 1}}, gwv1.RouteReasonInvalidKind},
		{"external name", []gwv1.BackendRef{backendRef("", "ext", 80, 1)}, nil,
			[]meshconfig.Backend{{Service: InvalidBackendNamespace + "/invalidkind", Port: 80, Weight: 1}}, gwv1.RouteReasonInvalidKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpRoute("a", "r", 1, parent, gwv1.HTTPRouteRule{BackendRefs: httpBackends(tc.refs...)})
			ext := svc("a", "ext", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "example.org", "", nil
			})
			rt := routesOf(t, RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{r}, Grants: tc.grants},
				svc("a", "web"), svc("a", "v1"), svc("a", "v2"), svc("b", "v1"), ext)
			if diff := cmp.Diff(tc.want, rt.bySvc["a/web"][0].Backends); diff != "" {
				t.Errorf("backends (-want +got):\n%s", diff)
			}
			c := cond(t, rt.states[0], gwv1.RouteConditionResolvedRefs)
			if c.Reason != string(tc.reason) || (c.Status == metav1.ConditionTrue) != (tc.reason == gwv1.RouteReasonResolvedRefs) {
				t.Errorf("ResolvedRefs %s/%s (%s), want reason %s", c.Status, c.Reason, c.Message, tc.reason)
			}
			t.Logf("ResolvedRefs: %s", c.Message)
			if a := cond(t, rt.states[0], gwv1.RouteConditionAccepted); a.Status != metav1.ConditionTrue {
				t.Errorf("Accepted %+v, want True: bad backends do not stop a route", a)
			}
		})
	}
}

// TestRouteParents: which parentRefs a route attaches to, on which port,
// and the Accepted condition of each.
func TestRouteParents(t *testing.T) {
	be := httpBackends(backendRef("", "web", 80, -1))
	gw := gwv1.ParentReference{Name: "gateway"} // a Gateway (the API's default kind): not the mesh's
	named := svcParent("web", "", 0)
	named.SectionName = ptr(gwv1.SectionName("http"))
	headless := svc("a", "headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, nil })
	for _, tc := range []struct {
		name    string
		ns      string // of the route
		parents []gwv1.ParentReference
		reasons []gwv1.RouteConditionReason // Accepted, per Service parent
		ports   map[string][]uint16         // Route.Port per Service that got routes
	}{
		{"producer", "a", []gwv1.ParentReference{svcParent("web", "", 0)}, []gwv1.RouteConditionReason{gwv1.RouteReasonAccepted}, map[string][]uint16{"a/web": {0}}},
		{"port", "a", []gwv1.ParentReference{svcParent("web", "", 80)}, []gwv1.RouteConditionReason{gwv1.RouteReasonAccepted}, map[string][]uint16{"a/web": {80}}},
		{"section name", "a", []gwv1.ParentReference{named}, []gwv1.RouteConditionReason{gwv1.RouteReasonAccepted}, map[string][]uint16{"a/web": {80}}},
		{"no such port", "a", []gwv1.ParentReference{svcParent("web", "", 81)}, []gwv1.RouteConditionReason{gwv1.RouteReasonNoMatchingParent}, nil},
		{"missing", "a", []gwv1.ParentReference{svcParent("nope", "", 0)}, []gwv1.RouteConditionReason{gwv1.RouteReasonNoMatchingParent}, nil},
		{"headless", "a", []gwv1.ParentReference{svcParent("headless", "", 0)}, []gwv1.RouteConditionReason{gwv1.RouteReasonUnsupportedValue}, nil},
		{"consumer", "c", []gwv1.ParentReference{svcParent("web", "a", 0)}, []gwv1.RouteConditionReason{gwv1.RouteReasonAccepted}, map[string][]uint16{"a/web": {0}}},
		{"gateway only", "a", []gwv1.ParentReference{gw}, nil, nil},
		{"two", "a", []gwv1.ParentReference{gw, svcParent("web", "", 80), svcParent("nope", "", 0), svcParent("web", "", 0)},
			[]gwv1.RouteConditionReason{gwv1.RouteReasonAccepted, gwv1.RouteReasonNoMatchingParent, gwv1.RouteReasonAccepted},
			map[string][]uint16{"a/web": {80, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpRoute(tc.ns, "r", 1, tc.parents, gwv1.HTTPRouteRule{BackendRefs: be})
			rt := routesOf(t, RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{r}}, svc("a", "web"), headless)
			st := rt.states[0]
			var reasons []gwv1.RouteConditionReason
			for i, p := range st.Parents {
				if p.ControllerName != GatewayControllerName || len(p.Conditions) != 2 {
					t.Errorf("parent %d: %+v", i, p)
				}
				a := p.Conditions[0]
				reasons = append(reasons, gwv1.RouteConditionReason(a.Reason))
				if a.Type != string(gwv1.RouteConditionAccepted) || a.ObservedGeneration != 1 || (a.Status == metav1.ConditionTrue) != (a.Reason == string(gwv1.RouteReasonAccepted)) {
					t.Errorf("parent %d Accepted: %+v", i, a)
				}
				t.Logf("parent %d: %s %s: %s", i, a.Status, a.Reason, a.Message)
			}
			if diff := cmp.Diff(tc.reasons, reasons); diff != "" {
				t.Errorf("Accepted reasons (-want +got):\n%s", diff)
			}
			ports := map[string][]uint16{}
			for k, rs := range rt.bySvc {
				for _, r := range rs {
					ports[k] = append(ports[k], r.Port)
				}
			}
			if diff := cmp.Diff(tc.ports, ports, cmpEmpty); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
		})
	}
}

var cmpEmpty = cmp.Transformer("empty", func(m map[string][]uint16) map[string][]uint16 {
	if len(m) == 0 {
		return nil
	}
	return m
})

// TestRouteUnsupported: a route with a value the mesh cannot serve is
// not Accepted (UnsupportedValue, saying which) and makes no Routes.
func TestRouteUnsupported(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("web", "", 0)}
	be := httpBackends(backendRef("", "web", 80, -1))
	regex := gwv1.HeaderMatchRegularExpression
	for _, tc := range []struct {
		name string
		rule gwv1.HTTPRouteRule
		want string // in the message
	}{
		{"path regex", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchRegularExpression, "/(a")}, BackendRefs: be},
			"spec.rules[1].matches[0].path: regular expression"},
		{"header regex", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Type: &regex, Name: "x", Value: "(?<"}}}}, BackendRefs: be},
			"spec.rules[1].matches[0].headers[0]: regular expression"},
		{"unknown path type", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch("Glob", "/*")}, BackendRefs: be},
			`path: unknown type "Glob"`},
		{"filter", gwv1.HTTPRouteRule{Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier}}, BackendRefs: be},
			"spec.rules[1].filters: the mesh does not apply HTTPRoute filters (RequestHeaderModifier)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpRoute("a", "r", 1, parent, gwv1.HTTPRouteRule{BackendRefs: be}, tc.rule)
			rt := routesOf(t, RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{r}}, svc("a", "web"))
			if len(rt.bySvc) != 0 {
				t.Errorf("routes %+v, want none", rt.bySvc)
			}
			c := cond(t, rt.states[0], gwv1.RouteConditionAccepted)
			if c.Status != metav1.ConditionFalse || c.Reason != string(gwv1.RouteReasonUnsupportedValue) || !strings.Contains(c.Message, tc.want) {
				t.Errorf("Accepted %s/%s %q, want False/UnsupportedValue saying %q", c.Status, c.Reason, c.Message, tc.want)
			}
		})
	}
}

// TestRouteTimeoutsRetry: Gateway API durations and retry.
func TestRouteTimeoutsRetry(t *testing.T) {
	parent := []gwv1.ParentReference{svcParent("web", "", 0)}
	be := httpBackends(backendRef("", "web", 80, -1))
	dur := func(s string) *gwv1.Duration { d := gwv1.Duration(s); return &d }
	for _, tc := range []struct {
		name            string
		timeouts        *gwv1.HTTPRouteTimeouts
		retry           *gwv1.HTTPRouteRetry
		timeout, backTO time.Duration
		wantRetry       *meshconfig.Retry
	}{
		{"none", nil, nil, 0, 0, nil},
		{"timeouts", &gwv1.HTTPRouteTimeouts{Request: dur("1h30m"), BackendRequest: dur("500ms")}, nil, 90 * time.Minute, 500 * time.Millisecond, nil},
		{"zero is none", &gwv1.HTTPRouteTimeouts{Request: dur("0s")}, nil, 0, 0, nil},
		{"retry", nil, &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503, 504}, Attempts: ptr(3), Backoff: dur("100ms")}, 0, 0,
			&meshconfig.Retry{Attempts: 3, Codes: []int{503, 504}, Backoff: 100 * time.Millisecond}},
		{"retry defaults", nil, &gwv1.HTTPRouteRetry{}, 0, 0, &meshconfig.Retry{Attempts: DefaultRetryAttempts, Backoff: DefaultRetryBackoff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpRoute("a", "r", 1, parent, gwv1.HTTPRouteRule{BackendRefs: be, Timeouts: tc.timeouts, Retry: tc.retry})
			rt := routesOf(t, RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{r}}, svc("a", "web"))
			got := rt.bySvc["a/web"][0]
			if got.Timeout != tc.timeout || got.BackendTimeout != tc.backTO {
				t.Errorf("timeouts %v %v, want %v %v", got.Timeout, got.BackendTimeout, tc.timeout, tc.backTO)
			}
			if diff := cmp.Diff(tc.wantRetry, got.Retry); diff != "" {
				t.Errorf("retry (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"", "1.5s", "-1s", "1d", "100000s", "1h1m1s1ms1h"} {
		if _, err := parseDuration(dur(bad)); err == nil {
			t.Errorf("parseDuration(%q) passed, want an error", bad)
		}
	}
}

// TestRouteServiceFacts: a change to a Service that routes refer to
// changes its facts only when it matters to them.
func TestRouteServiceFacts(t *testing.T) {
	s := svc("a", "web")
	moved := svc("a", "web", func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 })
	relabelled := svc("a", "web", func(s *corev1.Service) { s.Labels = map[string]string{"x": "y"} })
	if serviceFacts(s) == serviceFacts(moved) || serviceFacts(s) != serviceFacts(relabelled) || serviceFacts(nil) == serviceFacts(s) {
		t.Errorf("facts: %q %q %q", serviceFacts(s), serviceFacts(moved), serviceFacts(relabelled))
	}
}
