package view

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// FuzzRoutesValidate: whatever a user writes in an HTTPRoute or GRPCRoute
// (the apiserver's validation aside), the Routes the controller makes of
// it pass the data plane's validation: a route the data plane would
// refuse must be refused here (UnsupportedValue), or one bad route would
// make every node refuse its whole config.
func FuzzRoutesValidate(f *testing.F) {
	f.Add("PathPrefix", "/api", "x-h", "Exact", "v", "q", "RegularExpression", "a+", "10s", "pkg.S", "M", "Exact", int32(80), int32(1))
	f.Add("RegularExpression", "/(a", "", "Bogus", "(", "", "", "", "1.5s", "", "", "RegularExpression", int32(0), int32(-3))
	f.Add("Exact", "nope", "x", "RegularExpression", `\p{`, "q", "Exact", "", "0s", "(", "", "Glob", int32(65535), int32(1000000))
	f.Add("PathPrefix", "/", "x", "Exact", "", "q", "Exact", "", "1h", "s", "m", "Exact", int32(0), int32(1))
	f.Add("PathPrefix", "/", "x", "Exact", "", "q", "Exact", "", "1h", "s", "m", "Exact", int32(70000), int32(1))
	f.Fuzz(func(t *testing.T, pathType, path, hName, hType, hValue, qName, qType, qValue, timeout, grpcSvc, grpcMethod, grpcType string, port, weight int32) {
		pt, ht, qt := gwv1.PathMatchType(pathType), gwv1.HeaderMatchType(hType), gwv1.QueryParamMatchType(qType)
		d := gwv1.Duration(timeout)
		be := backendRef("", "web", port, weight)
		h := httpRoute("a", "h", 1, []gwv1.ParentReference{svcParent("web", "", 0)}, gwv1.HTTPRouteRule{
			Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &pt, Value: &path},
				Headers:     []gwv1.HTTPHeaderMatch{{Type: &ht, Name: gwv1.HTTPHeaderName(hName), Value: hValue}},
				QueryParams: []gwv1.HTTPQueryParamMatch{{Type: &qt, Name: gwv1.HTTPHeaderName(qName), Value: qValue}}}},
			BackendRefs: httpBackends(be),
			Timeouts:    &gwv1.HTTPRouteTimeouts{Request: &d, BackendRequest: &d},
			Retry:       &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{gwv1.HTTPRouteRetryStatusCode(port)}, Attempts: ptr(int(weight)), Backoff: &d},
		})
		gt := gwv1.GRPCMethodMatchType(grpcType)
		mm := &gwv1.GRPCMethodMatch{Type: &gt}
		if grpcSvc != "" {
			mm.Service = &grpcSvc
		}
		if grpcMethod != "" {
			mm.Method = &grpcMethod
		}
		g := grpcRoute("a", "g", 1, []gwv1.ParentReference{svcParent("web", "", 0)}, gwv1.GRPCRouteRule{
			Matches:     []gwv1.GRPCRouteMatch{{Method: mm, Headers: []gwv1.GRPCHeaderMatch{{Name: gwv1.GRPCHeaderName(hName), Value: hValue}}}},
			BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: be}},
		})
		rt := computeRoutes(RouteInputs{HTTPRoutes: []*gwv1.HTTPRoute{h}, GRPCRoutes: []*gwv1.GRPCRoute{g}}, lookupIn([]*corev1.Service{svc("a", "web")}))
		cfg := meshconfig.Config{TrustDomain: "td", Services: []meshconfig.Service{{Namespace: "a", Name: "web", Routes: rt.bySvc["a/web"]}}}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("routes %+v do not validate: %v", rt.bySvc["a/web"], err)
		}
		if len(rt.states) != 2 {
			t.Fatalf("%d route states, want 2", len(rt.states))
		}
	})
}
