package view

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Warning is an invalid annotation on a Namespace or Pod, and what the
// controller does instead.
type Warning struct {
	Object  corev1.ObjectReference
	Reason  string
	Message string
}

// ReasonInvalidAnnotation is the reason of every Warning.
const ReasonInvalidAnnotation = "InvalidAnnotation"

// nsAuthz is what a namespace's annotations say.
type nsAuthz struct {
	mode  policy.MTLSMode
	deflt policy.Action
}

// authzIndex is what authorize derived, kept by a Model to authorize a
// changed workload without the others.
type authzIndex struct {
	td         string
	compiled   []compiled             // sorted by namespace, name
	byNS       map[string][]*compiled // into compiled, in its order
	nss        map[string]nsAuthz
	nsWarnings []Warning            // of the namespaces, sorted by name
	podWarn    map[string][]Warning // by workload UID
}

// authorize gives every workload of s its Authz (naming its policies in
// PolicyRefs, with its probe ports) and fills s.Policies, s.AuthzPolicies and s.Warnings. pods are the input pods by UID.
func authorize(s *Snapshot, in Inputs, pods map[string]*corev1.Pod) *authzIndex {
	r := &resolver{trustDomain: in.TrustDomain, namespaces: in.Namespaces, workloads: s.Workloads}
	x := &authzIndex{td: in.TrustDomain, compiled: compilePolicies(in.Policies, r), byNS: map[string][]*compiled{},
		nss: map[string]nsAuthz{}, podWarn: map[string][]Warning{}}
	for i := range x.compiled {
		c := &x.compiled[i]
		s.Policies = append(s.Policies, c.state)
		x.byNS[c.state.Namespace] = append(x.byNS[c.state.Namespace], c) // keeps the namespace/name order
		if c.selector != nil {
			s.AuthzPolicies = append(s.AuthzPolicies, c.policy)
		}
	}
	// By key, as the stream and lookups expect ("a-b/x" sorts before "a/x").
	slices.SortFunc(s.AuthzPolicies, func(a, b policy.Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	for _, ns := range sortedNamespaces(in.Namespaces) {
		var ws []Warning
		x.nss[ns.Name], ws = namespaceAuthz(ns)
		x.nsWarnings = append(x.nsWarnings, ws...)
	}
	s.Warnings = slices.Clone(x.nsWarnings)
	for i := range s.Workloads {
		w := &s.Workloads[i]
		var ws []Warning
		w.Authz, ws = x.target(w, pods[w.UID])
		if len(ws) > 0 {
			x.podWarn[w.UID] = ws
			s.Warnings = append(s.Warnings, ws...)
		}
	}
	return x
}

// target is w's Authz: its namespace's modes, the pod's own mode and probe
// ports (p may be nil), and the policies of its namespace that select it;
// with the warnings about the pod's annotations.
func (x *authzIndex) target(w *meshconfig.Workload, p *corev1.Pod) (*policy.Target, []Warning) {
	t := &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}
	if n, ok := x.nss[w.Namespace]; ok {
		t.MTLSMode, t.Default = n.mode, n.deflt
	}
	var ws []Warning
	if p != nil {
		var m policy.MTLSMode
		var ok bool
		if m, ok, ws = podMode(p); ok {
			t.MTLSMode = m
		}
		t.ProbePorts = probePorts(p, w.IPs)
	}
	t.PolicyRefs = x.refs(w)
	return t, ws
}

// refs are the keys of the policies of w's namespace that select it.
func (x *authzIndex) refs(w *meshconfig.Workload) []string {
	var out []string
	for _, c := range x.byNS[w.Namespace] {
		if c.selects(w.Namespace, w.Labels) {
			out = append(out, c.policy.Key())
		}
	}
	return out
}

func sortedNamespaces(nss []*corev1.Namespace) []*corev1.Namespace {
	out := slices.Clone(nss)
	slices.SortFunc(out, func(a, b *corev1.Namespace) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// namespaceAuthz reads a namespace's annotations: an invalid mtls-mode is
// STRICT and an invalid default-action is Deny (fail closed), each with a
// Warning.
func namespaceAuthz(ns *corev1.Namespace) (nsAuthz, []Warning) {
	out := nsAuthz{mode: policy.MTLSPermissive, deflt: policy.ActionAllow}
	var ws []Warning
	ref := corev1.ObjectReference{Kind: "Namespace", APIVersion: "v1", Name: ns.Name, UID: ns.UID}
	if m, err := v1alpha1.ParseMTLSMode(ns.Annotations[v1alpha1.MTLSModeAnnotation]); err != nil {
		out.mode = policy.MTLSStrict
		ws = append(ws, warning(ref, v1alpha1.MTLSModeAnnotation+": "+err.Error()+"; its pods without their own annotation are STRICT"))
	} else {
		out.mode = policy.MTLSMode(m)
	}
	if a, err := v1alpha1.ParseDefaultAction(ns.Annotations[v1alpha1.DefaultActionAnnotation]); err != nil {
		out.deflt = policy.ActionDeny
		ws = append(ws, warning(ref, v1alpha1.DefaultActionAnnotation+": "+err.Error()+"; the namespace default is Deny"))
	} else {
		out.deflt = policy.Action(a)
	}
	return out, ws
}

// podMode reads a pod's mtls-mode annotation; ok is false when it has none.
func podMode(p *corev1.Pod) (m policy.MTLSMode, ok bool, ws []Warning) {
	v := p.Annotations[v1alpha1.MTLSModeAnnotation]
	if v == "" {
		return "", false, nil
	}
	parsed, err := v1alpha1.ParseMTLSMode(v)
	if err != nil {
		ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
		return policy.MTLSStrict, true, []Warning{warning(ref, v1alpha1.MTLSModeAnnotation+": "+err.Error()+"; the pod is STRICT")}
	}
	return policy.MTLSMode(parsed), true, nil
}

func warning(ref corev1.ObjectReference, msg string) Warning {
	return Warning{Object: ref, Reason: ReasonInvalidAnnotation, Message: msg}
}

// ResolvedAuthz is a copy of w's Authz with its PolicyRefs resolved into
// Policies from s.AuthzPolicies (as a node resolves them), nil when w has
// none.
func (s *Snapshot) ResolvedAuthz(w *meshconfig.Workload) *policy.Target {
	if w.Authz == nil {
		return nil
	}
	t := *w.Authz
	t.Policies, t.PolicyRefs = slices.Clone(t.Policies), nil
	for _, ref := range w.Authz.PolicyRefs {
		i, ok := slices.BinarySearchFunc(s.AuthzPolicies, ref, func(p policy.Policy, k string) int { return cmp.Compare(p.Key(), k) })
		if ok {
			t.Policies = append(t.Policies, s.AuthzPolicies[i])
		}
	}
	return &t
}
