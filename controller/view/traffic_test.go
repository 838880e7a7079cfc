package view

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// trafficPolicy makes the TrafficPolicy ns/name of generation 1, created
// at second created, targeting the named Services, with a retry budget.
func trafficPolicy(ns, name string, created int64, targets ...string) *v1alpha1.TrafficPolicy {
	tp := &v1alpha1.TrafficPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: KindTrafficPolicy},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Generation: 1,
			CreationTimestamp: metav1.NewTime(time.Unix(created, 0))},
		Spec: v1alpha1.TrafficPolicySpec{RetryBudget: &v1alpha1.RetryBudget{Percent: ptr(int32(50))}},
	}
	for _, s := range targets {
		tp.Spec.TargetRefs = append(tp.Spec.TargetRefs, v1alpha1.LocalPolicyTargetReference{Kind: "Service", Name: s})
	}
	return tp
}

// trafficOf is the name of the TrafficPolicy of Service key in s ("" for
// none, "?" when s lacks the Service).
func trafficOf(s *Snapshot, key string) string {
	for i := range s.Services {
		if s.Services[i].Key() == key {
			if tr := s.Services[i].Traffic; tr != nil {
				return tr.Name
			}
			return ""
		}
	}
	return "?"
}

// acceptedOf is the Accepted status/reason of TrafficPolicy key in s.
func acceptedOf(s *Snapshot, key string) string {
	for i := range s.Traffic {
		if s.Traffic[i].Key() == key {
			return string(s.Traffic[i].Accepted.Status) + "/" + s.Traffic[i].Accepted.Reason
		}
	}
	return "none"
}

// TestTrafficAttachment follows TrafficPolicies through a Model updated
// with only what changed, comparing each step with Compute: a policy
// targeting two Services sets both; a newer one targeting one of them
// loses it (Conflicted) and gets a missing Service once it is created
// (Accepted); deleting the older one hands its Service to the newer one
// and clears the other; an invalid one sets nothing.
func TestTrafficAttachment(t *testing.T) {
	in := &Inputs{TrustDomain: "td", Namespaces: []*corev1.Namespace{ns("a", enabled)},
		Services: []*corev1.Service{svc("a", "web"), svc("a", "db"), svc("a", "cache")}}
	m := NewModel(fixedSource{in})
	held := map[string]any{}
	apply(held, m.Update(Dirty{All: true}))
	type want struct {
		services map[string]string // Service -> its TrafficPolicy's name
		accepted map[string]string // TrafficPolicy -> status/reason
	}
	step := func(what string, d Dirty, w want) *Delta {
		t.Helper()
		delta := m.Update(d)
		apply(held, delta)
		got, full := m.Snapshot(), Compute(fixedSource{in}.All())
		if !reflect.DeepEqual(got, full) {
			t.Fatalf("%s: model differs from Compute:\n%s", what, snapDiff(got, full))
		}
		if err := heldMatches(held, full); err != nil {
			t.Fatalf("%s: applying the deltas: %v", what, err)
		}
		for key, name := range w.services {
			if tr := trafficOf(got, key); tr != name {
				t.Errorf("%s: Service %s has TrafficPolicy %q, want %q", what, key, tr, name)
			}
		}
		for key, a := range w.accepted {
			if st := acceptedOf(got, key); st != a {
				t.Errorf("%s: TrafficPolicy %s Accepted %s, want %s", what, key, st, a)
			}
		}
		if len(got.Traffic) != len(w.accepted) {
			t.Errorf("%s: states %+v, want %d", what, got.Traffic, len(w.accepted))
		}
		return delta
	}
	in.TrafficPolicies = append(in.TrafficPolicies, trafficPolicy("a", "old", 1, "web", "db"))
	step("old on web and db", Dirty{Traffic: map[string]bool{"a/old": true}}, want{
		services: map[string]string{"a/web": "a/old", "a/db": "a/old", "a/cache": ""},
		accepted: map[string]string{"a/old": "True/Accepted"},
	})
	s := m.Snapshot()
	web := s.Services[indexOf(s, "a/web")].Traffic
	wantTP := &meshconfig.TrafficPolicy{Name: "a/old", RetryBudget: &meshconfig.RetryBudget{Ratio: 0.5, MinPerSecond: 10}}
	if !reflect.DeepEqual(web, wantTP) {
		t.Errorf("a/web Traffic %+v, want %+v", web, wantTP)
	}

	in.TrafficPolicies = append(in.TrafficPolicies, trafficPolicy("a", "new", 5, "db", "search"))
	step("new on db (taken) and search (missing)", Dirty{Traffic: map[string]bool{"a/new": true}}, want{
		services: map[string]string{"a/web": "a/old", "a/db": "a/old"},
		accepted: map[string]string{"a/old": "True/Accepted", "a/new": "False/Conflicted"},
	})

	in.Services = append(in.Services, svc("a", "search"))
	d := step("search created", Dirty{Services: map[string]bool{"a/search": true}}, want{
		services: map[string]string{"a/web": "a/old", "a/db": "a/old", "a/search": "a/new"},
		accepted: map[string]string{"a/old": "True/Accepted", "a/new": "True/Accepted"},
	})
	if s := d.Services["a/search"]; s == nil || s.Traffic == nil {
		t.Errorf("the delta of search's creation has it without its TrafficPolicy: %+v", s)
	}

	in.TrafficPolicies = append(in.TrafficPolicies, trafficPolicy("a", "bad", 0, "cache"))
	in.TrafficPolicies[2].Spec.OutlierDetection = &v1alpha1.OutlierDetection{
		BaseEjectionTime: ptr(v1alpha1.Duration("1m")), MaxEjectionTime: ptr(v1alpha1.Duration("30s"))}
	step("an invalid one", Dirty{Traffic: map[string]bool{"a/bad": true}}, want{
		services: map[string]string{"a/cache": ""},
		accepted: map[string]string{"a/old": "True/Accepted", "a/new": "True/Accepted", "a/bad": "False/Invalid"},
	})

	in.TrafficPolicies = drop(in.TrafficPolicies, "a", "old")
	d = step("old deleted", Dirty{Traffic: map[string]bool{"a/old": true}}, want{
		services: map[string]string{"a/web": "", "a/db": "a/new", "a/search": "a/new"},
		accepted: map[string]string{"a/new": "True/Accepted", "a/bad": "False/Invalid"},
	})
	if s := d.Services["a/web"]; s == nil || s.Traffic != nil {
		t.Errorf("the delta of old's deletion has a/web %+v, want it without Traffic", s)
	}
	if _, ok := d.Services["a/cache"]; ok {
		t.Error("the delta of old's deletion has a/cache, whose policy did not change")
	}

	in.Services = drop(in.Services, "a", "db")
	in.Services = drop(in.Services, "a", "search")
	step("its Services deleted", Dirty{Services: map[string]bool{"a/db": true, "a/search": true}}, want{
		accepted: map[string]string{"a/new": "False/TargetNotFound", "a/bad": "False/Invalid"},
	})
	if m.Rebuilds != 1 {
		t.Errorf("%d rebuilds, want only the first", m.Rebuilds)
	}
}

func indexOf(s *Snapshot, key string) int {
	for i := range s.Services {
		if s.Services[i].Key() == key {
			return i
		}
	}
	return -1
}

// TestTrafficUnrelatedServiceChange: a Service change that no
// TrafficPolicy's outcome depends on does not resolve them again (the
// states stay the same slice).
func TestTrafficUnrelatedServiceChange(t *testing.T) {
	in := &Inputs{TrustDomain: "td", Namespaces: []*corev1.Namespace{ns("a", enabled)},
		Services:        []*corev1.Service{svc("a", "web"), svc("a", "other")},
		TrafficPolicies: []*v1alpha1.TrafficPolicy{trafficPolicy("a", "p", 1, "web")}}
	m := NewModel(fixedSource{in})
	m.Update(Dirty{All: true})
	before := m.traffic
	in.Services[1] = svc("a", "other", func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 })
	m.Update(Dirty{Services: map[string]bool{"a/other": true}})
	if m.traffic != before {
		t.Error("a change to a Service no TrafficPolicy targets resolved them again")
	}
	in.Services[0] = svc("a", "web", func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 })
	m.Update(Dirty{Services: map[string]bool{"a/web": true}})
	if m.traffic != before {
		t.Error("a change to a targeted Service that still exists resolved them again")
	}
	if got := trafficOf(m.Snapshot(), "a/web"); got != "a/p" {
		t.Errorf("a/web has TrafficPolicy %q after its change, want a/p", got)
	}
	// web becomes an ExternalName Service: nothing of p applies to it
	// any more.
	in.Services[0] = svc("a", "web", func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "api.example.com", "", nil
	})
	m.Update(Dirty{Services: map[string]bool{"a/web": true}})
	s := m.Snapshot()
	if got, st := trafficOf(s, "a/web"), acceptedOf(s, "a/p"); got != "" || st != "False/Invalid" {
		t.Errorf("after web became ExternalName: its TrafficPolicy %q, p Accepted %s; want none, False/Invalid", got, st)
	}
	if full := Compute(fixedSource{in}.All()); !reflect.DeepEqual(s, full) {
		t.Fatalf("model differs from Compute:\n%s", snapDiff(s, full))
	}
}

// TestDetectTrafficPolicy: discovery decides whether TrafficPolicies are
// watched; a cluster without them is no error.
func TestDetectTrafficPolicy(t *testing.T) {
	c := fake.NewClientset()
	if ok, err := DetectTrafficPolicy(t.Context(), c.Discovery()); ok || err != nil {
		t.Errorf("without the CRDs: %v, %v; want not served, no error", ok, err)
	}
	c.Resources = []*metav1.APIResourceList{{GroupVersion: v1alpha1.SchemeGroupVersion.String(),
		APIResources: []metav1.APIResource{{Name: "agentpolicies"}}}}
	if ok, err := DetectTrafficPolicy(t.Context(), c.Discovery()); ok || err != nil {
		t.Errorf("with agentpolicies only: %v, %v; want not served, no error", ok, err)
	}
	c.Resources[0].APIResources = append(c.Resources[0].APIResources, metav1.APIResource{Name: "trafficpolicies"})
	if ok, err := DetectTrafficPolicy(t.Context(), c.Discovery()); !ok || err != nil {
		t.Errorf("with trafficpolicies: %v, %v; want served", ok, err)
	}
}

// TestWatcherTrafficPolicies: TrafficPolicies reach the view through the
// dynamic informer (converted to the Go type): creating one sets its
// Service's Traffic, deleting it clears it; TrafficPolicy reads the cache.
func TestWatcherTrafficPolicies(t *testing.T) {
	client := fake.NewClientset(ns("a", enabled), svc("a", "web"))
	dyn := fakeDynamic(t)
	w, err := NewWatcher(client, dyn, Options{TrustDomain: "td", Logger: slog.New(slog.DiscardHandler), Debounce: 10 * time.Millisecond,
		TrafficPolicies: true})
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan *Snapshot, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sinkFuncs{snapshot: func(s *Snapshot) { snaps <- s }}) }()
	t.Cleanup(func() { cancel(); <-done })
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
	wait("web", func(s *Snapshot) bool { return trafficOf(s, "a/web") == "" })
	tp := trafficPolicy("a", "p", 1, "web")
	dynCreate(t, dyn, TrafficPolicyResource, tp)
	s := wait("web's TrafficPolicy", func(s *Snapshot) bool { return trafficOf(s, "a/web") == "a/p" })
	if len(s.Traffic) != 1 || s.Traffic[0].UID != string(tp.UID) || s.Traffic[0].Accepted.Status != metav1.ConditionTrue {
		t.Errorf("states %+v, want a/p accepted", s.Traffic)
	}
	if got := w.TrafficPolicy("a", "p"); got == nil || got.UID != tp.UID || len(got.Spec.TargetRefs) != 1 {
		t.Errorf("TrafficPolicy(a, p) = %+v", got)
	}
	if err := dyn.Resource(TrafficPolicyResource).Namespace("a").Delete(t.Context(), "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("web without it", func(s *Snapshot) bool { return trafficOf(s, "a/web") == "" && len(s.Traffic) == 0 })
}
