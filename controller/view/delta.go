package view

import (
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

// Delta is what a recompute changed: each entry is the object as it is
// now, nil when it is gone. An entry may also be unchanged (the receiver
// compares). The objects are never modified after they are handed over.
type Delta struct {
	TrustDomain string
	Workloads   map[string]*meshconfig.Workload // by UID
	Services    map[string]*meshconfig.Service  // by namespace/name
	Policies    map[string]*policy.Policy       // compiled bodies (Snapshot.AuthzPolicies) by namespace/name
}

// Keys of what the receiver holds now, so that a full Delta can name what
// went.
type Keys struct {
	Workloads, Services, Policies func(yield func(string) bool)
}

// DeltaOf is the Delta from a receiver that holds the objects named by
// held to s: every object of s, and nil for every held one s lacks.
func DeltaOf(s *Snapshot, held Keys) *Delta {
	d := &Delta{TrustDomain: s.TrustDomain,
		Workloads: make(map[string]*meshconfig.Workload, len(s.Workloads)),
		Services:  make(map[string]*meshconfig.Service, len(s.Services)),
		Policies:  make(map[string]*policy.Policy, len(s.AuthzPolicies))}
	for k := range held.Workloads {
		d.Workloads[k] = nil
	}
	for k := range held.Services {
		d.Services[k] = nil
	}
	for k := range held.Policies {
		d.Policies[k] = nil
	}
	for i := range s.Workloads {
		d.Workloads[s.Workloads[i].UID] = &s.Workloads[i]
	}
	for i := range s.Services {
		d.Services[s.Services[i].Key()] = &s.Services[i]
	}
	for i := range s.AuthzPolicies {
		d.Policies[s.AuthzPolicies[i].Key()] = &s.AuthzPolicies[i]
	}
	return d
}
