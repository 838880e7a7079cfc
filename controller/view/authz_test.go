package view

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

func agentPolicy(namespace, name string, sel map[string]string, action v1alpha1.Action, rules ...v1alpha1.Rule) *v1alpha1.AgentPolicy {
	return &v1alpha1.AgentPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("puid-" + name), Generation: 3},
		Spec:       v1alpha1.AgentPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, Action: action, Rules: rules},
	}
}

func labelled(ls map[string]string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Labels = ls } }

func annotated(k, v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Annotations = map[string]string{k: v} }
}

func nsAnnotated(name string, ann map[string]string) *corev1.Namespace {
	n := ns(name, map[string]string{"team": name})
	n.Annotations, n.UID = ann, types.UID("nsuid-"+name)
	return n
}

// byName is the workload name of s, its Authz resolved as a node would.
func byName(s *Snapshot, name string) *meshconfig.Workload {
	for i := range s.Workloads {
		if s.Workloads[i].Name == name {
			w := s.Workloads[i]
			w.Authz = s.ResolvedAuthz(&w)
			return &w
		}
	}
	return nil
}

func names(t *policy.Target) []string {
	var out []string
	for _, p := range t.Policies {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

var db = map[string]string{"app": "db"}

// TestAuthzSelection: a policy applies to the pods its podSelector picks
// in its own namespace (empty: all of them), sorted by namespace/name.
func TestAuthzSelection(t *testing.T) {
	s := Compute(Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("a", nil), nsAnnotated("b", nil)},
		Pods: []*corev1.Pod{pod("a", "db1", "n1", "10.0.0.1", labelled(db)), pod("a", "web", "n1", "10.0.0.2"),
			pod("b", "db2", "n2", "10.0.0.3", labelled(db))},
		Policies: []*v1alpha1.AgentPolicy{
			agentPolicy("a", "z-all", nil, v1alpha1.ActionAllow),
			agentPolicy("a", "db-only", db, v1alpha1.ActionDeny, v1alpha1.Rule{Ports: []v1alpha1.Port{{Port: 22}}}),
		},
	})
	for _, tc := range []struct {
		pod  string
		want []string
	}{{"db1", []string{"a/db-only", "a/z-all"}}, {"web", []string{"a/z-all"}}, {"db2", nil}} {
		if got := names(byName(s, tc.pod).Authz); !slices.Equal(got, tc.want) {
			t.Errorf("%s: policies %v, want %v", tc.pod, got, tc.want)
		}
	}
	if got := byName(s, "db1").Authz.Policies[0].Rules; len(got) != 1 || got[0].Ports[0] != (policy.PortRange{From: 22, To: 22}) {
		t.Errorf("db-only compiled to %+v", got)
	}
}

// TestAuthzResolver: peers given by namespaceSelector and podSelector are
// resolved over the inputs' workloads, those without an address yet
// included: their uid is what a peer is checked by once they have one.
func TestAuthzResolver(t *testing.T) {
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}
	s := Compute(Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("a", nil), nsAnnotated("b", nil)},
		Pods: []*corev1.Pod{pod("a", "target", "n1", "10.0.0.1"), pod("b", "c1", "n1", "10.0.0.2", labelled(db)),
			pod("b", "noip", "n1", "", labelled(db)), pod("a", "c3", "n1", "10.0.0.4", labelled(db))},
		Policies: []*v1alpha1.AgentPolicy{agentPolicy("a", "p", nil, v1alpha1.ActionAllow, v1alpha1.Rule{From: []v1alpha1.Source{
			{NamespaceSelector: sel},
			{NamespaceSelector: sel, PodSelector: &metav1.LabelSelector{MatchLabels: db}},
		}})},
	})
	from := byName(s, "target").Authz.Policies[0].Rules[0].From
	if !from[0].Namespaces.Equal(policy.SetOf("b")) || !from[0].Workloads.Any() {
		t.Errorf("namespaceSelector peer %+v, want namespaces {b}", from[0])
	}
	if !from[1].Workloads.Equal(policy.SetOf("uid-c1", "uid-noip")) || !from[1].Namespaces.Any() {
		t.Errorf("podSelector peer %+v, want workloads {uid-c1, uid-noip}", from[1])
	}
}

// TestAuthzAnnotations: mTLS mode from the pod, else its namespace, else
// PERMISSIVE; default from the namespace; invalid values fail closed with
// a warning on the object.
func TestAuthzAnnotations(t *testing.T) {
	strict := map[string]string{v1alpha1.MTLSModeAnnotation: "STRICT", v1alpha1.DefaultActionAnnotation: "Deny"}
	bad := map[string]string{v1alpha1.MTLSModeAnnotation: "strict", v1alpha1.DefaultActionAnnotation: "deny"}
	s := Compute(Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("plain", nil), nsAnnotated("strict", strict), nsAnnotated("bad", bad)},
		Pods: []*corev1.Pod{
			pod("plain", "p1", "n1", "10.0.0.1"),
			pod("plain", "p2", "n1", "10.0.0.2", annotated(v1alpha1.MTLSModeAnnotation, "STRICT")),
			pod("strict", "s1", "n1", "10.0.0.3"),
			pod("strict", "s2", "n1", "10.0.0.4", annotated(v1alpha1.MTLSModeAnnotation, "PERMISSIVE")),
			pod("bad", "b1", "n1", "10.0.0.5"),
			pod("bad", "b2", "n1", "10.0.0.6", annotated(v1alpha1.MTLSModeAnnotation, "PERMISSIVE")),
			pod("plain", "p3", "n1", "10.0.0.7", annotated(v1alpha1.MTLSModeAnnotation, "off")),
			pod("orphan", "o1", "n1", "10.0.0.8"),
		},
	})
	for _, tc := range []struct {
		pod   string
		mode  policy.MTLSMode
		deflt policy.Action
	}{
		{"p1", policy.MTLSPermissive, policy.ActionAllow}, {"p2", policy.MTLSStrict, policy.ActionAllow},
		{"s1", policy.MTLSStrict, policy.ActionDeny}, {"s2", policy.MTLSPermissive, policy.ActionDeny},
		{"b1", policy.MTLSStrict, policy.ActionDeny}, {"b2", policy.MTLSPermissive, policy.ActionDeny},
		{"p3", policy.MTLSStrict, policy.ActionAllow}, {"o1", policy.MTLSPermissive, policy.ActionAllow},
	} {
		if a := byName(s, tc.pod).Authz; a.MTLSMode != tc.mode || a.Default != tc.deflt || a.Policies != nil {
			t.Errorf("%s: authz %+v, want %s, default %s, no policies", tc.pod, a, tc.mode, tc.deflt)
		}
	}
	var got []string
	for _, w := range s.Warnings {
		got = append(got, w.Object.Kind+" "+w.Object.Namespace+"/"+w.Object.Name+": "+w.Message)
	}
	want := []string{
		`Namespace /bad: agentmesh.io/mtls-mode: mtls mode "strict": want STRICT or PERMISSIVE; its pods without their own annotation are STRICT`,
		`Namespace /bad: agentmesh.io/default-action: default action "deny": want Allow or Deny; the namespace default is Deny`,
		`Pod plain/p3: agentmesh.io/mtls-mode: mtls mode "off": want STRICT or PERMISSIVE; the pod is STRICT`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s.Warnings[0].Object.UID != "nsuid-bad" || s.Warnings[2].Object.UID != "uid-p3" || s.Warnings[0].Reason != ReasonInvalidAnnotation {
		t.Errorf("warning objects %+v", s.Warnings)
	}
}

// TestAuthzInvalidFailsClosed: a policy Compile rejects still applies to
// the pods its valid podSelector picks: an invalid Deny denies everything,
// an invalid Allow allows nothing (and so closes the namespace default).
// A policy whose podSelector is invalid selects nothing.
func TestAuthzInvalidFailsClosed(t *testing.T) {
	badSel := agentPolicy("a", "bad-selector", nil, v1alpha1.ActionDeny, v1alpha1.Rule{Ports: []v1alpha1.Port{{Port: 22}}})
	badSel.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}
	in := Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("a", nil)},
		Pods:       []*corev1.Pod{pod("a", "db", "n1", "10.0.0.1", labelled(db)), pod("a", "web", "n1", "10.0.0.2")},
		Policies: []*v1alpha1.AgentPolicy{
			agentPolicy("a", "bad-deny", db, v1alpha1.ActionDeny, v1alpha1.Rule{}), // no from, no ports
			agentPolicy("a", "bad-allow", map[string]string{}, v1alpha1.ActionAllow, v1alpha1.Rule{From: []v1alpha1.Source{{IPBlocks: []v1alpha1.IPBlock{{CIDR: "10.0.0.300/8"}}}}}),
			badSel,
		},
	}
	s := Compute(in)
	c := policy.Conn{MTLS: true, Identity: spiffe.New("td", "a", "x"), Addr: netip.MustParseAddr("10.9.9.9"), Port: 8080}
	if d := policy.Evaluate(byName(s, "db").Authz, c); d.Allow || d.Reason != policy.ReasonDenyRule || d.Policy != "a/bad-deny" {
		t.Errorf("db: %+v, want denied by the rule of a/bad-deny", d)
	}
	if d := policy.Evaluate(byName(s, "web").Authz, c); d.Allow || d.Reason != policy.ReasonNoAllowMatch {
		t.Errorf("web: %+v, want no Allow match (a/bad-allow has no rules)", d)
	}
	if got := names(byName(s, "web").Authz); !slices.Equal(got, []string{"a/bad-allow"}) {
		t.Errorf("web policies %v: the invalid podSelector must select nothing", got)
	}
	states := map[string]PolicyState{}
	for _, p := range s.Policies {
		states[p.Name] = p
	}
	for name, want := range map[string]string{
		"bad-deny":     "rules[0]: deny rule without from or ports; enforced instead as a Deny of every connection to the selected pods",
		"bad-allow":    "enforced instead as an Allow policy without rules",
		"bad-selector": `podSelector: "Bogus" is not a valid label selector operator; the policy selects no pod and is not enforced`,
	} {
		st := states[name]
		c := st.Accepted()
		if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonInvalid || c.ObservedGeneration != 3 || !strings.Contains(c.Message, want) {
			t.Errorf("%s: condition %+v, want False/Invalid with %q", name, c, want)
		}
	}
}

// TestAcceptedCondition: valid policies are Accepted, and rules with L7
// fields are named with what they mean under each action.
func TestAcceptedCondition(t *testing.T) {
	l7 := []v1alpha1.Rule{{Ports: []v1alpha1.Port{{Port: 80}}}, {Ports: []v1alpha1.Port{{Port: 80}}, HTTP: &v1alpha1.HTTPMatch{}, MCP: &v1alpha1.MCPMatch{}},
		{From: []v1alpha1.Source{{Namespaces: []string{"b"}}}, JSONRPC: &v1alpha1.JSONRPCMatch{}}}
	s := Compute(Inputs{TrustDomain: "td", Policies: []*v1alpha1.AgentPolicy{
		agentPolicy("a", "allow-l7", nil, v1alpha1.ActionAllow, l7...),
		agentPolicy("a", "deny-l7", nil, v1alpha1.ActionDeny, l7...),
		agentPolicy("a", "plain", nil, v1alpha1.ActionAllow, l7[0]),
	}})
	want := map[string]metav1.Condition{
		"allow-l7": {Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 3,
			Message: "enforced as written; rules[1] (http, mcp), rules[2] (jsonrpc): decided per request on HTTP traffic over the mesh; connections that are not HTTP (or plaintext from outside the mesh) match none of these Allow rules"},
		"deny-l7": {Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 3,
			Message: "enforced as written; rules[1] (http, mcp), rules[2] (jsonrpc): decided per request on HTTP traffic over the mesh; on connections that are not HTTP these Deny rules apply without their L7 part"},
		"plain": {Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 3, Message: "enforced as written"},
	}
	for _, p := range s.Policies {
		if got := p.Accepted(); got != want[p.Name] {
			t.Errorf("%s: %+v\nwant %+v", p.Name, got, want[p.Name])
		}
	}
}

// TestAuthzDeterministic: inputs in another order give a DeepEqual
// snapshot (the hub diffs with reflect.DeepEqual).
func TestAuthzDeterministic(t *testing.T) {
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}
	in := Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("a", map[string]string{v1alpha1.MTLSModeAnnotation: "x"}), nsAnnotated("b", nil)},
		Pods: []*corev1.Pod{pod("a", "p1", "n1", "10.0.0.1", labelled(db)), pod("b", "p2", "n2", "10.0.0.2", labelled(db)),
			pod("a", "p3", "n1", "10.0.0.3", annotated(v1alpha1.MTLSModeAnnotation, "y"))},
		Policies: []*v1alpha1.AgentPolicy{
			agentPolicy("a", "p", nil, v1alpha1.ActionAllow, v1alpha1.Rule{From: []v1alpha1.Source{{NamespaceSelector: sel, PodSelector: &metav1.LabelSelector{}}}}),
			agentPolicy("a", "q", db, v1alpha1.ActionDeny, v1alpha1.Rule{}),
			agentPolicy("b", "r", nil, v1alpha1.ActionAllow),
		},
	}
	want := Compute(in)
	rev := in
	rev.Namespaces = []*corev1.Namespace{in.Namespaces[1], in.Namespaces[0]}
	rev.Pods = []*corev1.Pod{in.Pods[2], in.Pods[1], in.Pods[0]}
	rev.Policies = []*v1alpha1.AgentPolicy{in.Policies[2], in.Policies[0], in.Policies[1]}
	if got := Compute(rev); !reflect.DeepEqual(want, got) {
		t.Errorf("order changed the snapshot:\n%+v\n%+v", want, got)
	}
	if len(want.Policies) != 3 || len(want.Warnings) != 2 || len(byName(want, "p1").Authz.Policies) != 2 {
		t.Errorf("snapshot misses what it should have: %+v", want)
	}
}

// TestWatcherPolicies: AgentPolicies reach the snapshot through the
// dynamic informer (converted to the Go type) and Policy reads the cache.
func TestWatcherPolicies(t *testing.T) {
	p := agentPolicy("a", "p", db, v1alpha1.ActionAllow, v1alpha1.Rule{Ports: []v1alpha1.Port{{Port: 80}}})
	snaps := make(chan *Snapshot, 1)
	w, err := NewWatcher(fake.NewClientset(ns("a", enabled), pod("a", "db", "n1", "10.0.0.1", labelled(db))), fakeDynamic(t, p),
		Options{TrustDomain: "td", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sink := sinkFuncs{snapshot: func(s *Snapshot) {
		select {
		case snaps <- s:
		default:
		}
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sink) }()
	defer func() { cancel(); <-done }()
	s := <-snaps
	if got := names(byName(s, "db").Authz); !slices.Equal(got, []string{"a/p"}) || len(s.Policies) != 1 || s.Policies[0].UID != "puid-p" {
		t.Errorf("first snapshot: db policies %v, states %+v", got, s.Policies)
	}
	if c := w.Policy("a", "p"); c == nil || c.Spec.Rules[0].Ports[0].Port != 80 {
		t.Errorf("Policy(a, p) = %+v", c)
	}
	if w.Policy("a", "nope") != nil {
		t.Error("Policy(a, nope) found something")
	}
}
