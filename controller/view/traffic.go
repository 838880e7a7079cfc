package view

import (
	"cmp"
	"maps"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/traffic"
)

// TrafficPolicies. Each Service gets, as its Traffic, the converted
// TrafficPolicy that traffic.Resolve says applies to it (the oldest valid
// one targeting it), nil when none does; every TrafficPolicy gets its
// Accepted condition (TrafficState). What Resolve reads of a Service is
// only whether it exists, so a TrafficPolicy change, or a Service that
// one of them targets coming or going, resolves them again.

// TrafficState is what became of one TrafficPolicy, for its status.
type TrafficState struct {
	Namespace, Name, UID string
	// Accepted is its Accepted condition, with ObservedGeneration the
	// generation it was resolved at and no lastTransitionTime (the
	// status writer keeps or sets it).
	Accepted metav1.Condition
}

// Key is namespace/name.
func (s *TrafficState) Key() string { return s.Namespace + "/" + s.Name }

// trafficTable is what the TrafficPolicies make: each Service's policy,
// each policy's state, and which Services they asked about.
type trafficTable struct {
	bySvc  map[string]*meshconfig.TrafficPolicy // by Service namespace/name; shared values: do not modify
	states []TrafficState                       // by Key
	// asked are the Services (namespace/name) Resolve asked about, and
	// what each was then: a change to that answer resolves again.
	asked map[string]traffic.Target
}

// computeTraffic resolves policies over the Services svc finds.
func computeTraffic(policies []*v1alpha1.TrafficPolicy, svc serviceLookup) *trafficTable {
	t := &trafficTable{asked: map[string]traffic.Target{}}
	res := traffic.Resolve(policies, func(ns, name string) traffic.Target {
		kind := trafficTarget(svc(ns, name))
		t.asked[ns+"/"+name] = kind
		return kind
	})
	t.bySvc = res.Services
	for _, tp := range policies {
		if tp == nil {
			continue
		}
		if c, ok := res.Accepted[tp.Namespace+"/"+tp.Name]; ok {
			delete(res.Accepted, tp.Namespace+"/"+tp.Name) // one state per key
			t.states = append(t.states, TrafficState{Namespace: tp.Namespace, Name: tp.Name, UID: string(tp.UID), Accepted: c})
		}
	}
	slices.SortFunc(t.states, func(a, b TrafficState) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return t
}

// trafficTarget is what svc (nil: none) is to a TrafficPolicy.
func trafficTarget(svc *corev1.Service) traffic.Target {
	switch {
	case svc == nil:
		return traffic.TargetMissing
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return traffic.TargetExternalName
	case len(vips(svc)) == 0:
		return traffic.TargetHeadless
	}
	return traffic.TargetClusterIP
}

// stale reports whether the Service key, now svc (nil: gone), is
// otherwise than when t was computed, in a way t depends on.
func (t *trafficTable) stale(key string, svc *corev1.Service) bool {
	was, ok := t.asked[key]
	return ok && was != trafficTarget(svc)
}

// changedServices are the Services whose policy differs between t and u.
func (t *trafficTable) changedServices(u *trafficTable) []string {
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
