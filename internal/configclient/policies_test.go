package configclient

import (
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

func refWL(uid, ip string, refs ...string) meshconfig.Workload {
	w := wl(uid, ip)
	w.Authz = &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow, PolicyRefs: refs}
	return w
}

func body(name string, port uint16) policy.Policy {
	return policy.Policy{Namespace: "ns", Name: name, Action: policy.ActionAllow,
		Rules: []policy.Rule{{Ports: []policy.PortRange{{From: port, To: port}}}}}
}

// TestViewPolicies: the mirror resolves references into the policy bodies
// sent once, follows a body change without the workloads, and forgets a
// policy once nothing refers to it.
func TestViewPolicies(t *testing.T) {
	v := newView()
	steps := []struct {
		r    configapi.ConfigResponse
		kept []string // policies the mirror keeps
		a    []uint16 // the ports of a's resolved policies
	}{
		{configapi.ConfigResponse{Full: true, TrustDomain: "td",
			Workloads: []meshconfig.Workload{refWL("a", "10.0.0.1", "ns/p", "ns/q"), refWL("b", "10.0.0.2", "ns/p")},
			Policies:  []policy.Policy{body("p", 80), body("q", 90)}}, []string{"ns/p", "ns/q"}, []uint16{80, 90}},
		{configapi.ConfigResponse{Policies: []policy.Policy{body("p", 81)}}, []string{"ns/p", "ns/q"}, []uint16{81, 90}},
		{configapi.ConfigResponse{Workloads: []meshconfig.Workload{refWL("a", "10.0.0.1", "ns/p")}, Policies: []policy.Policy{body("p", 81)}},
			[]string{"ns/p"}, []uint16{81}},
	}
	for i, s := range steps {
		if err := v.merge(&s.r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		c := v.config()
		if err := c.Validate(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		var kept []string
		for _, p := range c.Policies {
			kept = append(kept, p.Key())
		}
		var ports []uint16
		for _, p := range c.Workloads[0].Authz.Policies {
			ports = append(ports, p.Rules[0].Ports[0].From)
		}
		if !slices.Equal(kept, s.kept) || !slices.Equal(ports, s.a) {
			t.Errorf("step %d: kept %v, a's policies %v; want %v, %v", i, kept, ports, s.kept, s.a)
		}
		if refs := v.workloads["a"].Authz.PolicyRefs; len(refs) == 0 {
			t.Errorf("step %d: the mirror's own workload lost its references", i)
		}
	}
}
