package stream

import (
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/internal/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/policy"
)

func withAuthz(x meshconfig.Workload, policies ...string) meshconfig.Workload {
	t := &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}
	for _, p := range policies {
		t.Policies = append(t.Policies, policy.Policy{Namespace: "ns", Name: p, Action: policy.ActionAllow})
	}
	x.Authz = t
	return x
}

// TestHubAuthzOnlyToOwnNode: a workload's authorization data goes to its
// own node only, and a change to it alone wakes no other node.
func TestHubAuthzOnlyToOwnNode(t *testing.T) {
	h := NewHub(nil)
	defer h.Subscribe("n1")()
	defer h.Subscribe("n2")()
	h.Update(snap(withAuthz(w("a", "n1", "10.0.0.1")), withAuthz(w("b", "n2", "10.0.0.2"))))
	r1, c1 := next(t, h, "n1", Cursor{})
	r2, c2 := next(t, h, "n2", Cursor{})
	for _, tc := range []struct {
		node string
		r    []meshconfig.Workload
	}{{"n1", r1.Workloads}, {"n2", r2.Workloads}} {
		if len(tc.r) != 2 {
			t.Fatalf("%s got %d workloads, want 2", tc.node, len(tc.r))
		}
		for _, x := range tc.r {
			if own := x.Node == tc.node; own != (x.Authz != nil) {
				t.Errorf("%s: workload %s on %s has authz %v", tc.node, x.UID, x.Node, x.Authz)
			}
		}
	}
	v2 := h.Versions()["n2"]

	// A policy now selects a: only n1 hears of it, n2's version stays.
	h.Update(snap(withAuthz(w("a", "n1", "10.0.0.1"), "p"), withAuthz(w("b", "n2", "10.0.0.2"))))
	r1, c1 = next(t, h, "n1", c1)
	if !slices.Equal(uids(r1.Workloads), []string{"a"}) || len(r1.Workloads[0].Authz.Policies) != 1 {
		t.Fatalf("n1 delta = %+v, want a with one policy", r1)
	}
	c2 = noNext(t, h, "n2", c2)
	if got := h.Versions()["n2"]; got != v2 {
		t.Errorf("n2 version moved from %d to %d for a change it does not see", v2, got)
	}

	// An address change of a reaches both, without authz for n2.
	h.Update(snap(withAuthz(w("a", "n1", "10.0.0.11"), "p"), withAuthz(w("b", "n2", "10.0.0.2"))))
	r2, _ = next(t, h, "n2", c2)
	if !slices.Equal(uids(r2.Workloads), []string{"a"}) || r2.Workloads[0].Authz != nil {
		t.Fatalf("n2 delta = %+v, want a without authz", r2)
	}
	if r1, _ = next(t, h, "n1", c1); r1.Workloads[0].Authz == nil {
		t.Fatalf("n1 delta lost a's authz: %+v", r1)
	}
}
