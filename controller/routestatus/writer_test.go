package routestatus

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/controller/view"
)

func ptr[T any](v T) *T { return &v }

func parentRef(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
}

func entry(name string, accepted metav1.ConditionStatus, reason string) gwv1.RouteParentStatus {
	return gwv1.RouteParentStatus{ParentRef: parentRef(name), ControllerName: view.GatewayControllerName, Conditions: []metav1.Condition{
		{Type: "Accepted", Status: accepted, Reason: reason, Message: "m", ObservedGeneration: 1},
		{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", Message: "ok", ObservedGeneration: 1},
	}}
}

// route is an HTTPRoute a/r as the apiserver has it, with an entry of
// another controller (with a field the mesh's Go types do not know) and
// old, the mesh's entries.
func route(t *testing.T, old ...gwv1.RouteParentStatus) *unstructured.Unstructured {
	t.Helper()
	parents := []any{map[string]any{"controllerName": "example.com/gw", "parentRef": map[string]any{"name": "gw"},
		"conditions": []any{}, "futureField": "kept"}}
	for _, p := range old {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&p)
		if err != nil {
			t.Fatal(err)
		}
		parents = append(parents, m)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"namespace": "a", "name": "r", "uid": "u1", "generation": int64(1), "resourceVersion": "5"},
		"status":   map[string]any{"parents": parents},
	}}
}

func parentsOf(t *testing.T, u *unstructured.Unstructured) (others []any, ours []gwv1.RouteParentStatus) {
	t.Helper()
	raw, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	for _, e := range raw {
		m := e.(map[string]any)
		if m["controllerName"] != string(view.GatewayControllerName) {
			others = append(others, e)
			continue
		}
		var p gwv1.RouteParentStatus
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &p); err != nil {
			t.Fatal(err)
		}
		ours = append(ours, p)
	}
	return others, ours
}

// TestSetParents: the mesh's entries are replaced, the others' kept as
// they are; a condition whose status stays keeps its lastTransitionTime.
func TestSetParents(t *testing.T) {
	then := metav1.NewTime(time.Unix(1000, 0).UTC())
	old := entry("web", metav1.ConditionTrue, "Accepted")
	for i := range old.Conditions {
		old.Conditions[i].LastTransitionTime = then
	}
	gone := entry("gone", metav1.ConditionTrue, "Accepted")
	u := route(t, old, gone)
	want := []gwv1.RouteParentStatus{entry("web", metav1.ConditionFalse, "NoMatchingParent"), entry("new", metav1.ConditionTrue, "Accepted")}
	want[0].Conditions[1].Message = "ok" // ResolvedRefs stays True
	changed, err := setParents(u, want)
	if err != nil || !changed {
		t.Fatalf("setParents: %v, %v", changed, err)
	}
	others, ours := parentsOf(t, u)
	if len(others) != 1 || others[0].(map[string]any)["futureField"] != "kept" {
		t.Errorf("the other controller's entry: %+v", others)
	}
	if !sameParents(ours, want) {
		t.Fatalf("ours %+v, want %+v", ours, want)
	}
	if lt := ours[0].Conditions[0].LastTransitionTime; lt.Equal(&then) {
		t.Errorf("Accepted went False but kept its lastTransitionTime %v", lt)
	}
	if lt := ours[0].Conditions[1].LastTransitionTime; !lt.Equal(&then) {
		t.Errorf("ResolvedRefs stayed True but its lastTransitionTime is %v, want %v", lt, then)
	}
	if changed, err := setParents(u, want); err != nil || changed {
		t.Errorf("setParents again: %v, %v; want nothing to change", changed, err)
	}
	if changed, _ := setParents(u, nil); !changed {
		t.Error("removing the mesh's entries changed nothing")
	}
	if others, ours := parentsOf(t, u); len(others) != 1 || len(ours) != 0 {
		t.Errorf("after removing: others %+v, ours %+v", others, ours)
	}
}

// TestWriter: only the leader writes; it writes a changed status once,
// not again while the cache lags behind its write, and not at all when
// the cache shows the status.
func TestWriter(t *testing.T) {
	gvr := view.HTTPRouteResource
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "HTTPRouteList"}, route(t))
	var updates atomic.Int32
	dyn.PrependReactor("update", "httproutes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			updates.Add(1)
		}
		return false, nil, nil
	})
	var mu sync.Mutex
	cached := []gwv1.RouteParentStatus{}
	rv := "5"
	current := func(kind, ns, name string) (metav1.ObjectMeta, []gwv1.RouteParentStatus, bool) {
		mu.Lock()
		defer mu.Unlock()
		return metav1.ObjectMeta{Namespace: ns, Name: name, UID: "u1", Generation: 1, ResourceVersion: rv}, cached, kind == view.KindHTTPRoute
	}
	w := New(Options{Client: dyn, Current: current, Logger: slog.New(slog.DiscardHandler)})
	want := []gwv1.RouteParentStatus{entry("web", metav1.ConditionTrue, "Accepted")}
	st := view.Status{Routes: []view.RouteState{{Kind: view.KindHTTPRoute, Namespace: "a", Name: "r", UID: "u1", Generation: 1, Parents: want}}}

	// Run writes only while leading.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	w.SetStatus(st)
	time.Sleep(50 * time.Millisecond) // a quiet spell: proving that nothing is written
	if n := updates.Load(); n != 0 {
		t.Fatalf("%d updates before leading", n)
	}
	w.SetLeader(true)
	waitUntil(t, "a status update", func() bool { return updates.Load() == 1 })
	cancel()
	<-done

	// The cache has not caught up with the write: no second write.
	if err := w.sync(t.Context()); err != nil || updates.Load() != 1 {
		t.Errorf("sync while the cache lags: %v, %d updates, want 1", err, updates.Load())
	}
	u, err := dyn.Resource(gvr).Namespace("a").Get(t.Context(), "r", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	others, ours := parentsOf(t, u)
	if len(others) != 1 || !sameParents(ours, want) {
		t.Errorf("written: others %+v, ours %+v", others, ours)
	}
	// The cache shows it: nothing to write.
	mu.Lock()
	cached, rv = ours, "6"
	mu.Unlock()
	if err := w.sync(t.Context()); err != nil || updates.Load() != 1 {
		t.Errorf("sync once the cache shows the status: %v, %d updates, want 1", err, updates.Load())
	}
	// Another generation in the cache: a later view has the news.
	st.Routes[0].Parents = nil
	st.Routes[0].Generation = 2
	w.SetStatus(st)
	if err := w.sync(t.Context()); err != nil || updates.Load() != 1 {
		t.Errorf("sync of another generation: %v, %d updates, want 1", err, updates.Load())
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
