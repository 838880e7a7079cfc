package meshconfig

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/api/policy"
)

func refTarget(refs ...string) *policy.Target {
	return &policy.Target{MTLSMode: policy.MTLSStrict, Default: policy.ActionAllow, PolicyRefs: refs}
}

func pol(name string, a policy.Action) policy.Policy {
	return policy.Policy{Namespace: "agents", Name: name, Action: a, Rules: []policy.Rule{{Index: 0}}}
}

// TestResolvePolicies: references become the bodies the config carries
// once, the Authz the caller holds stays as it was, and a reference to a
// missing policy refuses the config.
func TestResolvePolicies(t *testing.T) {
	a, b := workload("1", "a", "n1", "198.19.1.2"), workload("2", "b", "n1", "198.19.1.3")
	a.Authz = refTarget("agents/allow-x", "agents/deny-y")
	b.Authz = refTarget("agents/allow-x")
	inline := workload("3", "c", "n1", "198.19.1.4")
	inline.Authz = &policy.Target{Policies: []policy.Policy{pol("inline", policy.ActionDeny)}}
	heldA := a.Authz
	c := Config{Workloads: []Workload{a, b, inline}, Policies: []policy.Policy{pol("allow-x", policy.ActionAllow), pol("deny-y", policy.ActionDeny)}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	names := func(w Workload) string {
		var out []string
		for _, p := range w.Authz.Policies {
			out = append(out, p.Key()+":"+string(p.Action))
		}
		return strings.Join(out, ",")
	}
	for i, want := range []string{"agents/allow-x:Allow,agents/deny-y:Deny", "agents/allow-x:Allow", "agents/inline:Deny"} {
		if got := names(c.Workloads[i]); got != want {
			t.Errorf("workload %s: policies %s, want %s", c.Workloads[i].Name, got, want)
		}
		if len(c.Workloads[i].Authz.PolicyRefs) != 0 {
			t.Errorf("workload %s: refs left after resolving", c.Workloads[i].Name)
		}
	}
	if len(heldA.Policies) != 0 || len(heldA.PolicyRefs) != 2 {
		t.Errorf("the caller's Authz was modified: %+v", heldA)
	}
	if err := c.Validate(); err != nil || names(c.Workloads[0]) != "agents/allow-x:Allow,agents/deny-y:Deny" {
		t.Errorf("second Validate: %v, policies %s", err, names(c.Workloads[0]))
	}

	missing := Config{Workloads: []Workload{a}, Policies: []policy.Policy{pol("allow-x", policy.ActionAllow)}}
	if err := missing.Validate(); err == nil || !strings.Contains(err.Error(), "workload agents/a: policy agents/deny-y is not in the config") {
		t.Errorf("missing policy: Validate() = %v", err)
	}
}

// TestResolvePoliciesJSON: the wire form names policies, and Parse
// resolves them.
func TestResolvePoliciesJSON(t *testing.T) {
	a := workload("1", "a", "n1", "198.19.1.2")
	a.Authz = refTarget("agents/allow-x")
	data, err := json.Marshal(Config{Workloads: []Workload{a}, Policies: []policy.Policy{pol("allow-x", policy.ActionAllow)}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"policyRefs":["agents/allow-x"]`) {
		t.Errorf("wire form lacks the reference: %s", data)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Workloads[0].Authz.Policies; len(got) != 1 || got[0].Key() != "agents/allow-x" {
		t.Errorf("parsed policies = %+v", got)
	}
}
