package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// trafficEnv drives TrafficPolicies through a real apiserver (with the
// chart's CRDs) and reads the controller's view of Services from its
// admin server (the Services and the view's reader are routeEnv's).
type trafficEnv struct{ routeEnv }

// run: a TrafficPolicy reaches its Service's Traffic with its defaults
// filled in and is Accepted; a newer one on the same Service is
// Conflicted; one whose Service is missing is TargetNotFound until the
// Service is created; a spec change keeps the condition's
// lastTransitionTime; deleting the older policy hands its Service to the
// newer one; the apiserver refuses an invalid one; a condition that did
// not change is not written again.
func (e *trafficEnv) run(t *testing.T) {
	e.t = t
	e.service("apps", "search")
	e.create("search-tp", `{"targetRefs": [{"group": "", "kind": "Service", "name": "search"}],
		"loadBalancer": {"algorithm": "LeastRequest"}, "retryBudget": {"percent": 50},
		"outlierDetection": {"baseEjectionTime": "10s"}, "timeouts": {"firstByte": "30s"},
		"rateLimit": {"perSource": {"requestsPerSecond": 10}, "tools": [{"name": "search", "requestsPerSecond": 1, "burst": 5}]}}`)
	svc := e.waitService("apps/search with its TrafficPolicy", "apps/search", trafficNamed("apps/search-tp"))
	want := &meshconfig.TrafficPolicy{Name: "apps/search-tp",
		LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBLeastRequest},
		Timeouts:     &meshconfig.Timeouts{FirstByte: 30 * time.Second},
		RetryBudget:  &meshconfig.RetryBudget{Ratio: 0.5, MinPerSecond: 10},
		Outlier:      &meshconfig.Outlier{ConsecutiveFailures: 5, BaseEjection: 10 * time.Second, MaxEjection: 300 * time.Second, MaxEjectedPercent: 10},
		RateLimit: &meshconfig.RateLimit{PerSource: &meshconfig.Bucket{Rate: 10, Burst: 10},
			Tools: map[string]meshconfig.Bucket{"search": {Rate: 1, Burst: 5}}},
	}
	if got := mustJSON(svc.Traffic); got != mustJSON(want) {
		t.Errorf("traffic %s\nwant    %s", got, mustJSON(want))
	}
	accepted := e.waitAccepted("search-tp", metav1.ConditionTrue, v1alpha1.ReasonAccepted)

	// The next one is newer: creationTimestamp counts whole seconds.
	created := e.get("search-tp").CreationTimestamp
	waitFor(t, "the next second", func() bool { return time.Now().Truncate(time.Second).After(created.Time) })
	e.create("search-tp2", `{"targetRefs": [{"group": "", "kind": "Service", "name": "search"}], "loadBalancer": {"algorithm": "RoundRobin"}}`)
	c := e.waitAccepted("search-tp2", metav1.ConditionFalse, v1alpha1.ReasonConflicted)
	t.Logf("conflicted: %s", c.Message)
	if !strings.Contains(c.Message, "TrafficPolicy search-tp applies instead (created earlier)") {
		t.Errorf("conflicted message %q does not name the older policy that applies", c.Message)
	}
	e.waitService("apps/search keeping the older policy", "apps/search", trafficNamed("apps/search-tp"))

	e.create("pending", `{"targetRefs": [{"group": "", "kind": "Service", "name": "later"}], "circuitBreaker": {"maxRequests": 7}}`)
	c = e.waitAccepted("pending", metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	t.Logf("target not found: %s", c.Message)
	e.service("apps", "later")
	e.waitAccepted("pending", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	svc = e.waitService("apps/later with its TrafficPolicy", "apps/later", trafficNamed("apps/pending"))
	if b := svc.Traffic.Breaker; b == nil || *b != (meshconfig.Breaker{MaxRequests: 7}) {
		t.Errorf("apps/later breaker %+v, want maxRequests 7 only", b)
	}

	err := e.tryCreate("invalid", `{"targetRefs": [{"group": "", "kind": "Service", "name": "search"}],
		"outlierDetection": {"baseEjectionTime": "1m", "maxEjectionTime": "30s"}}`)
	if !apierrors.IsInvalid(err) {
		t.Errorf("TrafficPolicy with maxEjectionTime < baseEjectionTime: %v, want Invalid from the CRD's validation", err)
	} else {
		t.Logf("invalid: %v", err)
	}

	e.update("search-tp", func(spec map[string]any) { spec["retryBudget"] = map[string]any{"percent": int64(30)} })
	e.waitService("apps/search with the changed policy", "apps/search", func(s *meshconfig.Service) bool {
		return s.Traffic != nil && s.Traffic.RetryBudget != nil && s.Traffic.RetryBudget.Ratio == 0.3
	})
	c = e.waitAccepted("search-tp", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	if c.ObservedGeneration != accepted.ObservedGeneration+1 || !c.LastTransitionTime.Equal(&accepted.LastTransitionTime) {
		t.Errorf("after a spec change: %+v; want the next generation and lastTransitionTime %v kept", c, accepted.LastTransitionTime)
	}

	e.delete("search-tp")
	e.waitAccepted("search-tp2", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	e.waitService("apps/search with the newer policy", "apps/search", trafficNamed("apps/search-tp2"))
	e.delete("search-tp2")
	e.waitService("apps/search without a policy", "apps/search", trafficNamed(""))
	e.checkSteady()
}

// checkSteady: a view that changes one policy's condition changes no
// other's stored object (its lastTransitionTime and all stay; that no
// request is made at all, the writer's unit tests check). Once probe's
// condition is written, the writer has been through a view with
// pending's unchanged one (the same sync, pending first).
func (e *trafficEnv) checkSteady() {
	rv := e.get("pending").ResourceVersion
	e.create("probe", `{"targetRefs": [{"group": "", "kind": "Service", "name": "nothing"}]}`)
	e.waitAccepted("probe", metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	if got := e.get("pending").ResourceVersion; got != rv {
		e.t.Errorf("TrafficPolicy pending rewritten in a steady state: resourceVersion %s -> %s", rv, got)
	}
}

// trafficNamed is true of a Service whose TrafficPolicy is name ("":
// none).
func trafficNamed(name string) func(*meshconfig.Service) bool {
	return func(s *meshconfig.Service) bool {
		if s.Traffic == nil {
			return name == ""
		}
		return s.Traffic.Name == name
	}
}

func (e *trafficEnv) tryCreate(name, spec string) error {
	var s map[string]any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		e.t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": view.KindTrafficPolicy,
		"metadata": map[string]any{"name": name, "namespace": "apps"}, "spec": s}}
	_, err := e.dyn.Resource(view.TrafficPolicyResource).Namespace("apps").Create(e.t.Context(), u, metav1.CreateOptions{})
	return err
}

func (e *trafficEnv) create(name, spec string) {
	e.t.Helper()
	if err := e.tryCreate(name, spec); err != nil {
		e.t.Fatalf("create TrafficPolicy apps/%s: %v", name, err)
	}
}

// update changes the spec of TrafficPolicy apps/name with change.
func (e *trafficEnv) update(name string, change func(spec map[string]any)) {
	e.t.Helper()
	res := e.dyn.Resource(view.TrafficPolicyResource).Namespace("apps")
	u, err := res.Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	change(spec)
	if err := unstructured.SetNestedMap(u.Object, spec, "spec"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := res.Update(e.t.Context(), u, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("update TrafficPolicy apps/%s: %v", name, err)
	}
}

func (e *trafficEnv) delete(name string) {
	e.t.Helper()
	if err := e.dyn.Resource(view.TrafficPolicyResource).Namespace("apps").Delete(e.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete TrafficPolicy apps/%s: %v", name, err)
	}
}

// get reads TrafficPolicy apps/name into its Go type.
func (e *trafficEnv) get(name string) *v1alpha1.TrafficPolicy {
	e.t.Helper()
	u, err := e.dyn.Resource(view.TrafficPolicyResource).Namespace("apps").Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var tp v1alpha1.TrafficPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tp); err != nil {
		e.t.Fatal(err)
	}
	return &tp
}

// waitAccepted waits for the Accepted condition of TrafficPolicy
// apps/name to have status and reason at the policy's generation.
func (e *trafficEnv) waitAccepted(name string, status metav1.ConditionStatus, reason string) metav1.Condition {
	e.t.Helper()
	var c metav1.Condition
	waitFor(e.t, fmt.Sprintf("TrafficPolicy apps/%s Accepted=%s/%s", name, status, reason), func() bool {
		tp := e.get(name)
		got := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionAccepted)
		if got == nil || got.Status != status || got.Reason != reason || got.ObservedGeneration != tp.Generation {
			return false
		}
		c = *got
		return true
	})
	return c
}
