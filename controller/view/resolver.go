package view

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/compile"
)

// resolver answers compile's selector questions over one computation's
// inputs: namespaces by label, and the workloads with addresses.
type resolver struct {
	trustDomain string
	namespaces  []*corev1.Namespace
	workloads   []meshconfig.Workload // sorted by UID
}

var _ compile.Resolver = (*resolver)(nil)

func (r *resolver) TrustDomain() string { return r.trustDomain }

// Namespaces are the names of the namespaces sel matches, sorted.
func (r *resolver) Namespaces(sel labels.Selector) []string {
	var out []string
	for _, ns := range r.namespaces {
		if sel.Matches(labels.Set(ns.Labels)) {
			out = append(out, ns.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Workloads are the UIDs, sorted, of the workloads in namespaces ns whose
// labels sel matches.
func (r *resolver) Workloads(ns policy.Set[string], sel labels.Selector) []string {
	var out []string
	for i := range r.workloads {
		w := &r.workloads[i]
		if ns.Has(w.Namespace) && sel.Matches(labels.Set(w.Labels)) {
			out = append(out, w.UID)
		}
	}
	return out
}
