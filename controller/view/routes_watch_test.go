package view

import (
	"context"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// TestDetectGatewayAPI: discovery decides which Gateway API resources are
// watched; a cluster without them is no error.
func TestDetectGatewayAPI(t *testing.T) {
	c := fake.NewClientset()
	g, err := DetectGatewayAPI(t.Context(), c.Discovery())
	if err != nil || g.Any() || g.Missing() == "" {
		t.Errorf("without the CRDs: %+v, %v; want nothing served, no error", g, err)
	}
	c.Resources = []*metav1.APIResourceList{
		{GroupVersion: GatewayV1.String(), APIResources: []metav1.APIResource{{Name: "httproutes"}, {Name: "httproutes/status"}, {Name: "gateways"}}},
		{GroupVersion: GatewayV1beta1.String(), APIResources: []metav1.APIResource{{Name: "referencegrants"}}},
	}
	g, err = DetectGatewayAPI(t.Context(), c.Discovery())
	want := GatewayAPI{HTTPRoutes: true, ReferenceGrants: true}
	if err != nil || g != want || g.Missing() != "grpcroutes.gateway.networking.k8s.io/v1" {
		t.Errorf("with httproutes and referencegrants: %+v (missing %q), %v; want %+v", g, g.Missing(), err, want)
	}
}

// TestWatcherRoutes: HTTPRoutes and ReferenceGrants reach the view through
// the dynamic informers (converted to the Go types): a route change, and
// a grant, update the parent Service; RouteStatus reads the cache.
func TestWatcherRoutes(t *testing.T) {
	client := fake.NewClientset(ns("a", enabled), svc("a", "web"), svc("a", "v1"), svc("b", "v2"))
	r := httpRoute("a", "r", 1, []gwv1.ParentReference{svcParent("web", "", 0)},
		gwv1.HTTPRouteRule{BackendRefs: httpBackends(backendRef("", "v1", 80, 90), backendRef("b", "v2", 80, 10))})
	r.Status.Parents = []gwv1.RouteParentStatus{{ParentRef: gwv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway"}}
	dyn := fakeDynamic(t, r)
	w, err := NewWatcher(client, dyn, Options{TrustDomain: "td", Logger: slog.New(slog.DiscardHandler), Debounce: 10 * time.Millisecond,
		Gateway: GatewayAPI{HTTPRoutes: true, GRPCRoutes: true, ReferenceGrants: true}})
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan *Snapshot, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sinkFuncs{snapshot: func(s *Snapshot) { snaps <- s }}) }()
	t.Cleanup(func() { cancel(); <-done })
	web := func(s *Snapshot) []string {
		var out []string
		for _, sv := range s.Services {
			if sv.Key() == "a/web" {
				for _, rt := range sv.Routes {
					for _, b := range rt.Backends {
						out = append(out, b.Service)
					}
				}
			}
		}
		return out
	}
	wait := func(what string, ok func(*Snapshot) bool) *Snapshot {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-snaps:
				if ok(s) {
					return s
				}
			case <-deadline:
				t.Fatalf("no snapshot with %s within 10s", what)
			}
		}
	}
	s := wait("the route", func(s *Snapshot) bool { return len(web(s)) == 2 })
	if got := web(s); got[0] != "a/v1" || got[1] != InvalidBackendNamespace+"/refnotpermitted" {
		t.Errorf("backends %v, want a/v1 and the cross-namespace one refused", got)
	}
	if len(s.Routes) != 1 || s.Routes[0].Key() != "HTTPRoute/a/r" {
		t.Errorf("route states %+v", s.Routes)
	}
	meta, parents, ok := w.RouteStatus(KindHTTPRoute, "a", "r")
	if !ok || meta.UID != r.UID || len(parents) != 1 || parents[0].ControllerName != "example.com/gateway" {
		t.Errorf("RouteStatus = %+v %+v %v", meta, parents, ok)
	}
	if _, _, ok := w.RouteStatus(KindGRPCRoute, "a", "r"); ok {
		t.Error("RouteStatus found a GRPCRoute a/r")
	}
	dynCreate(t, dyn, ReferenceGrantResource, grant("b", KindHTTPRoute, "a", nil))
	wait("the grant", func(s *Snapshot) bool { g := web(s); return len(g) == 2 && g[1] == "b/v2" })
	r2 := r.DeepCopy()
	r2.Spec.Rules[0].BackendRefs = r2.Spec.Rules[0].BackendRefs[:1]
	dynUpdate(t, dyn, HTTPRouteResource, r2)
	wait("the route changed", func(s *Snapshot) bool { return len(web(s)) == 1 })
}

// dynCreate and dynUpdate write obj (a typed object) through dyn.
func dynCreate(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, obj metav1.Object) {
	t.Helper()
	if _, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(t.Context(), toUnstructured(t, obj), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func dynUpdate(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, obj metav1.Object) {
	t.Helper()
	if _, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Update(t.Context(), toUnstructured(t, obj), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func toUnstructured(t *testing.T, obj metav1.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	switch obj.(type) {
	case *gwv1.HTTPRoute:
		u.SetGroupVersionKind(GatewayV1.WithKind(KindHTTPRoute))
	case *gwv1beta1.ReferenceGrant:
		u.SetGroupVersionKind(GatewayV1beta1.WithKind(KindReferenceGrant))
	}
	return u
}
