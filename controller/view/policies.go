package view

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/compile"
)

// PolicyState is what the controller made of one AgentPolicy: the input of
// its status (Accepted condition) and events.
type PolicyState struct {
	Namespace, Name string
	UID             string
	Generation      int64
	// Enforced is the action enforced for the selected pods: the spec's, or
	// Deny for an invalid policy whose action is not Allow.
	Enforced policy.Action
	// Invalid is why the policy could not be compiled ("" when it was).
	Invalid string
	// SelectorInvalid is set when spec.podSelector itself is invalid: the
	// policy then selects no pod at all.
	SelectorInvalid bool
	// L7 lists the rules with http, jsonrpc or mcp fields, as
	// "rules[i] (http, mcp)".
	L7 []string
}

// Key is namespace/name.
func (s *PolicyState) Key() string { return s.Namespace + "/" + s.Name }

// compiled is one policy ready to be attached to the workloads it selects.
type compiled struct {
	state    PolicyState
	selector labels.Selector // nil: selects nothing
	policy   policy.Policy
	// usesWorkloads is set when the compiled peers depend on the
	// workloads (a podSelector): a change to them recompiles it.
	usesWorkloads bool
}

// compilePolicies compiles every policy once, sorted by namespace/name.
// A policy Compile rejects still applies, fail closed, to the pods its
// podSelector picks: an invalid Allow as an Allow without rules, anything
// else as a Deny of every connection.
func compilePolicies(ps []*v1alpha1.AgentPolicy, r compile.Resolver) []compiled {
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, func(a, b *v1alpha1.AgentPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	out := make([]compiled, 0, len(sorted))
	for _, p := range sorted {
		out = append(out, compileOne(p, r))
	}
	return out
}

func compileOne(p *v1alpha1.AgentPolicy, r compile.Resolver) compiled {
	dr := &depResolver{Resolver: r}
	c := compileWith(p, dr)
	c.usesWorkloads = dr.workloads
	return c
}

// depResolver notes whether compiling asked about workloads.
type depResolver struct {
	compile.Resolver
	workloads bool
}

func (d *depResolver) Workloads(ns policy.Set[string], sel labels.Selector) []string {
	d.workloads = true
	return d.Resolver.Workloads(ns, sel)
}

func compileWith(p *v1alpha1.AgentPolicy, r compile.Resolver) compiled {
	c := compiled{state: PolicyState{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID),
		Generation: p.Generation, Enforced: policy.Action(p.Spec.Action), L7: l7Rules(p)}}
	sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
	if err != nil {
		c.state.Invalid, c.state.SelectorInvalid = fmt.Sprintf("podSelector: %v", err), true
		return c
	}
	c.selector = sel
	c.policy, err = compile.Compile(p, r)
	if err == nil {
		return c
	}
	c.state.Invalid = err.Error()
	c.policy = policy.Policy{Namespace: p.Namespace, Name: p.Name, Action: policy.ActionAllow}
	if p.Spec.Action != v1alpha1.ActionAllow {
		c.state.Enforced = policy.ActionDeny
		c.policy.Action = policy.ActionDeny
		c.policy.Rules = []policy.Rule{{Index: -1}} // no from, no ports: every peer, every port
	}
	return c
}

// l7Rules describes the rules that use L7 fields.
func l7Rules(p *v1alpha1.AgentPolicy) []string {
	var out []string
	for i := range p.Spec.Rules {
		r := &p.Spec.Rules[i]
		var fields []string
		for _, f := range []struct {
			set  bool
			name string
		}{{r.HTTP != nil, "http"}, {r.JSONRPC != nil, "jsonrpc"}, {r.MCP != nil, "mcp"}} {
			if f.set {
				fields = append(fields, f.name)
			}
		}
		if len(fields) > 0 {
			out = append(out, fmt.Sprintf("rules[%d] (%s)", i, strings.Join(fields, ", ")))
		}
	}
	return out
}

// selects reports whether c applies to a workload in namespace ns with
// labels ls.
func (c *compiled) selects(ns string, ls map[string]string) bool {
	return c.selector != nil && c.state.Namespace == ns && c.selector.Matches(labels.Set(ls))
}
