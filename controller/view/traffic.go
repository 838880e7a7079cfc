package view

import (
	"cmp"
	"maps"
	"reflect"
	"slices"

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
	// whether each existed then: a change to that answer resolves again.
	asked map[string]bool
}

// computeTraffic resolves policies over the Services svc finds.
func computeTraffic(policies []*v1alpha1.TrafficPolicy, svc serviceLookup) *trafficTable {
	t := &trafficTable{asked: map[string]bool{}}
	res := traffic.Resolve(policies, func(ns, name string) bool {
		ok := svc(ns, name) != nil
		t.asked[ns+"/"+name] = ok
		return ok
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

// stale reports whether the Service key exists (per exists) otherwise
// than when t was computed, in a way t depends on.
func (t *trafficTable) stale(key string, exists bool) bool {
	was, ok := t.asked[key]
	return ok && was != exists
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
