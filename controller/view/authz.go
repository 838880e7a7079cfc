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

// authorize gives every workload of s its Authz (naming its policies in
// PolicyRefs, with its probe ports) and fills s.Policies, s.AuthzPolicies and s.Warnings. pods are the input pods by UID.
func authorize(s *Snapshot, in Inputs, pods map[string]*corev1.Pod) {
	r := &resolver{trustDomain: in.TrustDomain, namespaces: in.Namespaces, workloads: s.Workloads}
	cs := compilePolicies(in.Policies, r)
	byNS := map[string][]*compiled{} // keeps the namespace/name order
	for i := range cs {
		s.Policies = append(s.Policies, cs[i].state)
		byNS[cs[i].state.Namespace] = append(byNS[cs[i].state.Namespace], &cs[i])
		if cs[i].selector != nil {
			s.AuthzPolicies = append(s.AuthzPolicies, cs[i].policy)
		}
	}
	// By key, as the stream and lookups expect ("a-b/x" sorts before "a/x").
	slices.SortFunc(s.AuthzPolicies, func(a, b policy.Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	nss := map[string]nsAuthz{}
	for _, ns := range sortedNamespaces(in.Namespaces) {
		nss[ns.Name] = s.namespaceAuthz(ns)
	}
	for i := range s.Workloads {
		w := &s.Workloads[i]
		t := &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}
		if n, ok := nss[w.Namespace]; ok {
			t.MTLSMode, t.Default = n.mode, n.deflt
		}
		if p := pods[w.UID]; p != nil {
			if m, ok := s.podMode(p); ok {
				t.MTLSMode = m
			}
			t.ProbePorts = probePorts(p, w.IPs)
		}
		for _, c := range byNS[w.Namespace] {
			if c.selects(w.Namespace, w.Labels) {
				t.PolicyRefs = append(t.PolicyRefs, c.policy.Key())
			}
		}
		w.Authz = t
	}
}

func sortedNamespaces(nss []*corev1.Namespace) []*corev1.Namespace {
	out := slices.Clone(nss)
	slices.SortFunc(out, func(a, b *corev1.Namespace) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// namespaceAuthz reads a namespace's annotations: an invalid mtls-mode is
// STRICT and an invalid default-action is Deny (fail closed), each with a
// Warning.
func (s *Snapshot) namespaceAuthz(ns *corev1.Namespace) nsAuthz {
	out := nsAuthz{mode: policy.MTLSPermissive, deflt: policy.ActionAllow}
	ref := corev1.ObjectReference{Kind: "Namespace", APIVersion: "v1", Name: ns.Name, UID: ns.UID}
	if m, err := v1alpha1.ParseMTLSMode(ns.Annotations[v1alpha1.MTLSModeAnnotation]); err != nil {
		out.mode = policy.MTLSStrict
		s.warn(ref, v1alpha1.MTLSModeAnnotation+": "+err.Error()+"; its pods without their own annotation are STRICT")
	} else {
		out.mode = policy.MTLSMode(m)
	}
	if a, err := v1alpha1.ParseDefaultAction(ns.Annotations[v1alpha1.DefaultActionAnnotation]); err != nil {
		out.deflt = policy.ActionDeny
		s.warn(ref, v1alpha1.DefaultActionAnnotation+": "+err.Error()+"; the namespace default is Deny")
	} else {
		out.deflt = policy.Action(a)
	}
	return out
}

// podMode reads a pod's mtls-mode annotation; ok is false when it has none.
func (s *Snapshot) podMode(p *corev1.Pod) (m policy.MTLSMode, ok bool) {
	v := p.Annotations[v1alpha1.MTLSModeAnnotation]
	if v == "" {
		return "", false
	}
	parsed, err := v1alpha1.ParseMTLSMode(v)
	if err != nil {
		ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
		s.warn(ref, v1alpha1.MTLSModeAnnotation+": "+err.Error()+"; the pod is STRICT")
		return policy.MTLSStrict, true
	}
	return policy.MTLSMode(parsed), true
}

func (s *Snapshot) warn(ref corev1.ObjectReference, msg string) {
	s.Warnings = append(s.Warnings, Warning{Object: ref, Reason: ReasonInvalidAnnotation, Message: msg})
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
