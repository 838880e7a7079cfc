package controller

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/debug"
	"github.com/agentmesh/agentmesh/controller/view"
)

// routeEnv drives Gateway API routes through a real apiserver (with the
// chart's CRDs) and reads the controller's view of Services from its
// admin server.
type routeEnv struct {
	t     *testing.T
	cs    kubernetes.Interface
	dyn   dynamic.Interface
	admin string // base URL
}

// run: an HTTPRoute on a Service splits its requests by weight and gets
// the mesh's status; a missing backend, a missing parent and a consumer
// route say so in the status; the apiserver refuses an invalid weight;
// another controller's status entry survives the mesh's writes.
func (e *routeEnv) run(t *testing.T) {
	e.t = t
	for _, name := range []string{"web", "v1", "v2"} {
		e.service("apps", name)
	}
	e.create("apps", "HTTPRoute", "canary", `{"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
		"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
		           "backendRefs": [{"name": "v1", "port": 80, "weight": 90}, {"name": "v2", "port": 80, "weight": 10}],
		           "timeouts": {"request": "10s"}, "retry": {"codes": [503], "attempts": 2}}]}`)
	svc := e.waitService("apps/web with the canary route", "apps/web", func(s *meshconfig.Service) bool { return len(s.Routes) == 1 })
	want := meshconfig.Route{Name: "apps/canary", Kind: view.KindHTTPRoute, Port: 80,
		Match:    meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/api"},
		Backends: []meshconfig.Backend{{Service: "apps/v1", Port: 80, Weight: 90}, {Service: "apps/v2", Port: 80, Weight: 10}},
		Timeout:  10e9, Retry: &meshconfig.Retry{Attempts: 2, Codes: []int{503}, Backoff: view.DefaultRetryBackoff}}
	if got, _ := json.Marshal(svc.Routes[0]); string(got) != mustJSON(want) {
		t.Errorf("route %s, want %s", got, mustJSON(want))
	}
	e.waitParent("apps", "HTTPRoute", "canary", "web", "Accepted", metav1.ConditionTrue, "Accepted")
	e.waitParent("apps", "HTTPRoute", "canary", "web", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")

	e.create("apps", "HTTPRoute", "missing-backend", `{"parentRefs": [{"group": "", "kind": "Service", "name": "v1"}],
		"rules": [{"backendRefs": [{"name": "v3", "port": 80}]}]}`)
	c := e.waitParent("apps", "HTTPRoute", "missing-backend", "v1", "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound")
	t.Logf("missing backend: %s", c.Message)
	e.waitParent("apps", "HTTPRoute", "missing-backend", "v1", "Accepted", metav1.ConditionTrue, "Accepted")
	e.service("apps", "v3") // the backend appears: the route resolves
	e.waitParent("apps", "HTTPRoute", "missing-backend", "v1", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")

	err := e.tryCreate("apps", "HTTPRoute", "negative", `{"parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
		"rules": [{"backendRefs": [{"name": "v1", "port": 80, "weight": -1}]}]}`)
	if !apierrors.IsInvalid(err) {
		t.Errorf("HTTPRoute with weight -1: %v, want Invalid from the CRD's validation", err)
	}

	e.create("apps", "HTTPRoute", "orphan", `{"parentRefs": [{"group": "", "kind": "Service", "name": "nope"}],
		"rules": [{"backendRefs": [{"name": "v1", "port": 80}]}]}`)
	c = e.waitParent("apps", "HTTPRoute", "orphan", "nope", "Accepted", metav1.ConditionFalse, "NoMatchingParent")
	t.Logf("missing parent: %s", c.Message)

	if _, err := e.cs.CoreV1().Namespaces().Create(t.Context(), nsObj("shop", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create("shop", "GRPCRoute", "consumer", `{"parentRefs": [{"group": "", "kind": "Service", "name": "web", "namespace": "apps"}],
		"rules": [{"matches": [{"method": {"service": "pkg.Greeter", "method": "Hello"}}], "backendRefs": [{"name": "v2", "namespace": "apps", "port": 80}]}]}`)
	c = e.waitParent("shop", "GRPCRoute", "consumer", "web", "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted")
	t.Logf("consumer route without a ReferenceGrant: %s", c.Message)
	c = e.waitParent("shop", "GRPCRoute", "consumer", "web", "Accepted", metav1.ConditionTrue, "Accepted")
	t.Logf("consumer route: %s", c.Message)
	e.waitService("apps/web with the consumer route", "apps/web", func(s *meshconfig.Service) bool {
		return slices.ContainsFunc(s.Routes, func(r meshconfig.Route) bool {
			return r.Name == "shop/consumer" && r.Match.PathType == meshconfig.PathExact && r.Match.Path == "/pkg.Greeter/Hello"
		})
	})
	e.checkOthersKept()
}

// checkOthersKept: another controller's entry in status.parents stays
// when the mesh rewrites its own (a spec change bumps the generation).
func (e *routeEnv) checkOthersKept() {
	t := e.t
	res := e.dyn.Resource(view.HTTPRouteResource).Namespace("apps")
	u, err := res.Get(t.Context(), "canary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	parents = append(parents, map[string]any{"controllerName": "example.com/gateway", "parentRef": map[string]any{"name": "gw"},
		"conditions": []any{map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
			"lastTransitionTime": "2024-01-01T00:00:00Z"}}})
	if err := unstructured.SetNestedSlice(u.Object, parents, "status", "parents"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.UpdateStatus(t.Context(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err = res.Get(t.Context(), "canary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	rules[0].(map[string]any)["timeouts"] = map[string]any{"request": "20s"}
	if err := unstructured.SetNestedSlice(u.Object, rules, "spec", "rules"); err != nil {
		t.Fatal(err)
	}
	if u, err = res.Update(t.Context(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	gen := u.GetGeneration()
	e.waitParent("apps", "HTTPRoute", "canary", "web", "Accepted", metav1.ConditionTrue, "Accepted")
	r := e.route("apps", "HTTPRoute", "canary")
	var theirs, ours int
	for _, p := range r.Status.Parents {
		switch p.ControllerName {
		case "example.com/gateway":
			theirs++
		case view.GatewayControllerName:
			ours++
			if c := meta.FindStatusCondition(p.Conditions, "Accepted"); c == nil || c.ObservedGeneration != gen {
				t.Errorf("our entry %+v, want observedGeneration %d", p, gen)
			}
		}
	}
	if theirs != 1 || ours != 1 {
		t.Errorf("status parents %+v: want one of theirs and one of ours", r.Status.Parents)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (e *routeEnv) service(ns, name string) {
	e.t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := e.cs.CoreV1().Services(ns).Create(e.t.Context(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
}

func gvrOf(kind string) schema.GroupVersionResource {
	if kind == "GRPCRoute" {
		return view.GRPCRouteResource
	}
	return view.HTTPRouteResource
}

func (e *routeEnv) tryCreate(ns, kind, name, spec string) error {
	var s map[string]any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		e.t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": s}}
	_, err := e.dyn.Resource(gvrOf(kind)).Namespace(ns).Create(e.t.Context(), u, metav1.CreateOptions{})
	return err
}

func (e *routeEnv) create(ns, kind, name, spec string) {
	e.t.Helper()
	if err := e.tryCreate(ns, kind, name, spec); err != nil {
		e.t.Fatalf("create %s %s/%s: %v", kind, ns, name, err)
	}
}

// route reads a route into its Go type.
func (e *routeEnv) route(ns, kind, name string) *gwv1.HTTPRoute {
	e.t.Helper()
	u, err := e.dyn.Resource(gvrOf(kind)).Namespace(ns).Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var r gwv1.HTTPRoute // a GRPCRoute's metadata and status read the same
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(map[string]any{"metadata": u.Object["metadata"], "status": u.Object["status"]}, &r); err != nil {
		e.t.Fatal(err)
	}
	return &r
}

// waitParent waits for the mesh's status entry of the route's parentRef
// to the Service parent to have condition typ with status and reason, at
// the route's generation.
func (e *routeEnv) waitParent(ns, kind, name, parent, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	e.t.Helper()
	var c metav1.Condition
	waitFor(e.t, fmt.Sprintf("%s %s/%s parent %s condition %s=%s/%s", kind, ns, name, parent, typ, status, reason), func() bool {
		r := e.route(ns, kind, name)
		for _, p := range r.Status.Parents {
			if p.ControllerName != view.GatewayControllerName || string(p.ParentRef.Name) != parent {
				continue
			}
			if got := meta.FindStatusCondition(p.Conditions, typ); got != nil && got.Status == status && got.Reason == reason &&
				got.ObservedGeneration == r.Generation {
				c = *got
				return true
			}
		}
		return false
	})
	return c
}

// waitService waits for the controller's view of Service key to satisfy
// ok.
func (e *routeEnv) waitService(what, key string, ok func(*meshconfig.Service) bool) *meshconfig.Service {
	e.t.Helper()
	var s *meshconfig.Service
	waitFor(e.t, what, func() bool {
		resp, err := http.Get(e.admin + debug.ServicePath + "?service=" + key)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var got meshconfig.Service
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&got) != nil || !ok(&got) {
			return false
		}
		s = &got
		return true
	})
	return s
}
