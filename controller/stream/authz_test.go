package stream

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/view"
)

// withAuthz gives x an Authz that refers to policies (namespace ns).
func withAuthz(x meshconfig.Workload, policies ...string) meshconfig.Workload {
	t := &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}
	for _, p := range policies {
		t.PolicyRefs = append(t.PolicyRefs, "ns/"+p)
	}
	x.Authz = t
	return x
}

// pol is policy ns/name; port distinguishes versions of its body.
func pol(name string, port uint16) policy.Policy {
	return policy.Policy{Namespace: "ns", Name: name, Action: policy.ActionAllow,
		Rules: []policy.Rule{{Ports: []policy.PortRange{{From: port, To: port}}}}}
}

func snapPol(ps []policy.Policy, ws ...meshconfig.Workload) *view.Snapshot {
	s := snap(slices.Clone(ws)...) // the hub keeps pointers into the slice
	s.AuthzPolicies = ps
	return s
}

func policyKeys(r *configapi.ConfigResponse) []string {
	var out []string
	for _, p := range r.Policies {
		out = append(out, p.Key())
	}
	return out
}

// TestHubAuthzOnlyToOwnNode: a workload's authorization data goes to its
// own node only, and a change to it alone wakes no other node.
func TestHubAuthzOnlyToOwnNode(t *testing.T) {
	h := NewHub(All)
	defer h.Subscribe("n1")()
	defer h.Subscribe("n2")()
	ps := []policy.Policy{pol("p", 80)}
	h.Update(snapPol(ps, withAuthz(w("a", "n1", "10.0.0.1")), withAuthz(w("b", "n2", "10.0.0.2"))))
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

	// A policy now selects a: only n1 hears of it, with the body once.
	h.Update(snapPol(ps, withAuthz(w("a", "n1", "10.0.0.1"), "p"), withAuthz(w("b", "n2", "10.0.0.2"))))
	r1, c1 = next(t, h, "n1", c1)
	if !slices.Equal(uids(r1.Workloads), []string{"a"}) || !slices.Equal(r1.Workloads[0].Authz.PolicyRefs, []string{"ns/p"}) ||
		!slices.Equal(policyKeys(r1), []string{"ns/p"}) {
		t.Fatalf("n1 delta = %+v, want a referring to ns/p and the body of ns/p", r1)
	}
	c2 = noNext(t, h, "n2", c2)
	if got := h.Versions()["n2"]; got != v2 {
		t.Errorf("n2 version moved from %d to %d for a change it does not see", v2, got)
	}

	// An address change of a reaches both, without authz for n2.
	h.Update(snapPol(ps, withAuthz(w("a", "n1", "10.0.0.11"), "p"), withAuthz(w("b", "n2", "10.0.0.2"))))
	r2, _ = next(t, h, "n2", c2)
	if !slices.Equal(uids(r2.Workloads), []string{"a"}) || r2.Workloads[0].Authz != nil || len(r2.Policies) != 0 {
		t.Fatalf("n2 delta = %+v, want a without authz and no policy", r2)
	}
	if r1, _ = next(t, h, "n1", c1); r1.Workloads[0].Authz == nil || !slices.Equal(policyKeys(r1), []string{"ns/p"}) {
		t.Fatalf("n1 delta lost a's authz or its policy: %+v", r1)
	}
}

// TestHubPoliciesOncePerNode: a node receives each policy body its
// workloads refer to exactly once, however many refer to it; a change of
// the body alone goes to the nodes that refer to it and carries no
// workload; a policy nothing on a node refers to never reaches it.
func TestHubPoliciesOncePerNode(t *testing.T) {
	h := NewHub(All)
	defer h.Subscribe("n1")()
	defer h.Subscribe("n2")()
	ws := []meshconfig.Workload{
		withAuthz(w("a", "n1", "10.0.0.1"), "shared", "only-a"),
		withAuthz(w("b", "n1", "10.0.0.2"), "shared"),
		withAuthz(w("c", "n2", "10.0.0.3")),
	}
	h.Update(snapPol([]policy.Policy{pol("only-a", 1), pol("shared", 2), pol("unused", 3)}, ws...))
	r1, c1 := next(t, h, "n1", Cursor{})
	r2, c2 := next(t, h, "n2", Cursor{})
	if !slices.Equal(policyKeys(r1), []string{"ns/only-a", "ns/shared"}) || len(r2.Policies) != 0 {
		t.Fatalf("full: n1 policies %v (want only-a, shared once), n2 %v (want none)", policyKeys(r1), policyKeys(r2))
	}
	v2 := h.Versions()["n2"]

	// The shared policy's body changes: n1 gets it and no workload.
	h.Update(snapPol([]policy.Policy{pol("only-a", 1), pol("shared", 22), pol("unused", 3)}, ws...))
	r1, c1 = next(t, h, "n1", c1)
	if len(r1.Workloads) != 0 || !slices.Equal(policyKeys(r1), []string{"ns/shared"}) || r1.Policies[0].Rules[0].Ports[0].From != 22 {
		t.Fatalf("n1 delta = %+v, want only the new body of ns/shared", r1)
	}
	c2 = noNext(t, h, "n2", c2)

	// The unused policy changes: nobody hears of it.
	h.Update(snapPol([]policy.Policy{pol("only-a", 1), pol("shared", 22), pol("unused", 33)}, ws...))
	c1 = noNext(t, h, "n1", c1)
	c2 = noNext(t, h, "n2", c2)
	if got := h.Versions()["n2"]; got != v2 {
		t.Errorf("n2 version moved from %d to %d", v2, got)
	}

	// c comes to refer to the unchanged shared policy: n2 gets c and the body.
	ws[2] = withAuthz(w("c", "n2", "10.0.0.3"), "shared")
	h.Update(snapPol([]policy.Policy{pol("only-a", 1), pol("shared", 22), pol("unused", 33)}, ws...))
	r2, _ = next(t, h, "n2", c2)
	if !slices.Equal(uids(r2.Workloads), []string{"c"}) || !slices.Equal(policyKeys(r2), []string{"ns/shared"}) {
		t.Fatalf("n2 delta = %+v, want c and ns/shared", r2)
	}
	noNext(t, h, "n1", c1)
}

// BenchmarkPolicySnapshot: 2000 workloads on 10 nodes in 5 namespaces,
// each namespace with one Allow policy selecting all its pods and naming
// them all as allowed peers (400 UIDs). It reports the bytes of one node's
// full snapshot with the policy bodies sent once (as the hub does) and, for
// comparison, with every target carrying its policies inline.
func BenchmarkPolicySnapshot(b *testing.B) {
	const pods, nodes, namespaces = 2000, 10, 5
	var ps []policy.Policy
	uids := make([][]string, namespaces)
	for i := range pods {
		uids[i%namespaces] = append(uids[i%namespaces], fmt.Sprintf("0c1f5e2a-0000-4000-8000-%012d", i))
	}
	for n := range namespaces {
		ps = append(ps, policy.Policy{Namespace: fmt.Sprintf("ns%d", n), Name: "same-namespace", Action: policy.ActionAllow,
			Rules: []policy.Rule{{From: []policy.Peer{{Workloads: policy.SetOf(uids[n]...)}}, Ports: []policy.PortRange{{From: 8080, To: 8080}}}}})
	}
	var ws []meshconfig.Workload
	for i := range pods {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		x := w(uids[i%namespaces][i/namespaces], fmt.Sprintf("n%d", i%nodes), ip.String())
		x.Namespace = fmt.Sprintf("ns%d", i%namespaces)
		x.Authz = &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow, PolicyRefs: []string{ps[i%namespaces].Key()}}
		ws = append(ws, x)
	}
	h := NewHub(All)
	defer h.Subscribe("n0")()
	h.Update(snapPol(ps, ws...))
	var size, inline int
	for b.Loop() {
		r, _, _, _ := h.Next("n0", Cursor{})
		data, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	r, _, _, _ := h.Next("n0", Cursor{})
	for i := range r.Workloads {
		if a := r.Workloads[i].Authz; a != nil {
			cp := *a
			for _, ref := range a.PolicyRefs {
				cp.Policies = append(cp.Policies, r.Policies[slices.IndexFunc(r.Policies, func(p policy.Policy) bool { return p.Key() == ref })])
			}
			r.Workloads[i].Authz = &cp
		}
	}
	r.Policies = nil
	data, _ := json.Marshal(r)
	inline = len(data)
	b.ReportMetric(float64(size)/(1<<20), "MiB/node-snapshot")
	b.ReportMetric(float64(inline)/(1<<20), "MiB/node-snapshot-inline")
}
