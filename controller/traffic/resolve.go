package traffic

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Resolution is what Resolve decided.
type Resolution struct {
	// Services maps a Service, "namespace/name", to the converted policy
	// that applies to it; a Service without an entry keeps the mesh's
	// defaults. A policy targeting several Services is one value shared
	// by their entries: do not modify it.
	Services map[string]*meshconfig.TrafficPolicy
	// Accepted maps each TrafficPolicy, "namespace/name", to its Accepted
	// condition, with ObservedGeneration set and LastTransitionTime zero
	// (the status writer keeps the old time while Status is unchanged,
	// as meta.SetStatusCondition does).
	Accepted map[string]metav1.Condition
}

// Target is what a TrafficPolicy's target Service is to the mesh.
type Target int

const (
	// TargetMissing: no such Service.
	TargetMissing Target = iota
	// TargetClusterIP: a Service with a cluster IP, whose connections
	// and requests the callers' tunnels proxy: all of a policy applies.
	TargetClusterIP
	// TargetHeadless: a Service without a cluster IP. Callers connect
	// to its pods' addresses, so only what the pods' own tunnels enforce
	// (rateLimit) applies.
	TargetHeadless
	// TargetExternalName: a DNS alias for a name outside the mesh, with
	// no endpoints: nothing applies.
	TargetExternalName
)

// Resolve decides which TrafficPolicy applies to each Service. Policies
// claim their target Services oldest first (by creationTimestamp, then
// namespace and name), so a Service targeted by several gets the oldest
// valid one and the others are told which. A policy is Accepted when it
// applies to at least one Service; else it is Invalid (Convert failed,
// or its targets are Services it cannot apply to: ExternalName, or
// headless without a rateLimit; it claims nothing), TargetNotFound (none
// of its Services exists) or Conflicted (an older policy applies to each
// that exists). target says what the Service namespace/name is. The
// order of policies does not matter; nil entries are skipped.
func Resolve(policies []*v1alpha1.TrafficPolicy, target func(namespace, name string) Target) Resolution {
	ordered := slices.DeleteFunc(slices.Clone(policies), func(tp *v1alpha1.TrafficPolicy) bool { return tp == nil })
	slices.SortStableFunc(ordered, older)
	res := Resolution{Services: map[string]*meshconfig.TrafficPolicy{}, Accepted: map[string]metav1.Condition{}}
	winner := map[string]*v1alpha1.TrafficPolicy{} // Service key -> the policy that applies
	for _, tp := range ordered {
		key := tp.Namespace + "/" + tp.Name
		if _, seen := res.Accepted[key]; seen {
			continue // listed twice: the first (older) copy counts
		}
		mc, err := Convert(tp)
		if err != nil {
			res.Accepted[key] = condition(tp, metav1.ConditionFalse, v1alpha1.ReasonInvalid, err.Error())
			continue
		}
		o := claim(tp, winner, target)
		for _, name := range o.applied {
			res.Services[tp.Namespace+"/"+name] = mc
		}
		res.Accepted[key] = o.condition(tp)
	}
	return res
}

// claim takes for tp each of its target Services that exists, that it
// can apply to, and that no older policy took (in winner, by Service
// key).
func claim(tp *v1alpha1.TrafficPolicy, winner map[string]*v1alpha1.TrafficPolicy, target func(namespace, name string) Target) outcome {
	var o outcome
	seen := map[string]bool{}
	for _, ref := range tp.Spec.TargetRefs {
		svc := tp.Namespace + "/" + ref.Name
		if seen[ref.Name] {
			continue // the same Service twice (the schema refuses it)
		}
		seen[ref.Name] = true
		kind := target(tp.Namespace, ref.Name)
		switch w := winner[svc]; {
		case kind == TargetMissing:
			o.missing = append(o.missing, ref.Name)
		case kind == TargetExternalName:
			o.unusable = append(o.unusable, fmt.Sprintf("Service %s is of type ExternalName: its traffic leaves the mesh, so no TrafficPolicy applies to it", ref.Name))
		case kind == TargetHeadless && tp.Spec.RateLimit == nil:
			o.unusable = append(o.unusable, fmt.Sprintf("Service %s is headless (no cluster IP): callers connect to its pods directly, so only rateLimit (enforced by the pods' tunnels) applies to it, and this policy has none", ref.Name))
		case w != nil:
			o.lost = append(o.lost, lostTo{ref.Name, w, w.CreationTimestamp.Before(&tp.CreationTimestamp)})
		default:
			winner[svc] = tp
			o.applied = append(o.applied, ref.Name)
			if kind == TargetHeadless {
				o.headless = append(o.headless, ref.Name)
			}
		}
	}
	return o
}

// older orders policies oldest first, then by namespace and name.
func older(a, b *v1alpha1.TrafficPolicy) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// outcome is what became of one policy's targets.
type outcome struct {
	applied, missing []string // Service names
	headless         []string // those applied to that have no cluster IP
	lost             []lostTo
	unusable         []string // why it cannot apply to a Service
}

// lostTo is a Service another policy got first.
type lostTo struct {
	service string
	winner  *v1alpha1.TrafficPolicy
	earlier bool // created earlier; else the same second, first by name
}

func (o *outcome) condition(tp *v1alpha1.TrafficPolicy) metav1.Condition {
	var msg []string
	if len(o.applied) > 0 {
		msg = append(msg, "applies to "+services(o.applied))
	}
	if len(o.headless) > 0 {
		msg = append(msg, services(o.headless)+" without a cluster IP: only rateLimit applies there (callers connect to the pods directly)")
	}
	for _, l := range o.lost {
		why := "created at the same time, first by name"
		if l.earlier {
			why = "created earlier"
		}
		msg = append(msg, fmt.Sprintf("Service %s: TrafficPolicy %s applies instead (%s)", l.service, l.winner.Name, why))
	}
	msg = append(msg, o.unusable...)
	if len(o.missing) > 0 {
		msg = append(msg, services(o.missing)+" not found")
	}
	text := strings.Join(msg, "; ")
	switch {
	case len(o.applied) > 0:
		return condition(tp, metav1.ConditionTrue, v1alpha1.ReasonAccepted, text)
	case len(o.lost) > 0:
		return condition(tp, metav1.ConditionFalse, v1alpha1.ReasonConflicted, text)
	case len(o.unusable) > 0:
		return condition(tp, metav1.ConditionFalse, v1alpha1.ReasonInvalid, text)
	default:
		return condition(tp, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound, text)
	}
}

// services is "Service a" or "Services a, b".
func services(names []string) string {
	if len(names) == 1 {
		return "Service " + names[0]
	}
	return "Services " + strings.Join(names, ", ")
}

func condition(tp *v1alpha1.TrafficPolicy, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{
		Type:               v1alpha1.ConditionAccepted,
		Status:             status,
		Reason:             reason,
		Message:            msg,
		ObservedGeneration: tp.Generation,
	}
}
