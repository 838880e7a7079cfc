package view

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Accepted is the policy's Accepted condition (without
// lastTransitionTime, which the status writer keeps or sets).
func (s *PolicyState) Accepted() metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionAccepted, ObservedGeneration: s.Generation,
		Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, Message: "enforced as written"}
	switch {
	case s.Invalid != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1alpha1.ReasonInvalid, s.invalidMessage()
	case len(s.L7) > 0:
		c.Message = s.l7Message()
	}
	return c
}

func (s *PolicyState) invalidMessage() string {
	switch {
	case s.SelectorInvalid:
		return s.Invalid + "; the policy selects no pod and is not enforced"
	case s.Enforced == policy.ActionAllow:
		return s.Invalid + "; enforced instead as an Allow policy without rules: the selected pods accept only connections that another Allow policy allows"
	default:
		return s.Invalid + "; enforced instead as a Deny of every connection to the selected pods"
	}
}

func (s *PolicyState) l7Message() string {
	rules := strings.Join(s.L7, ", ")
	if s.Enforced == policy.ActionDeny {
		return fmt.Sprintf("enforced as written; %s: decided per request on HTTP traffic over the mesh; on connections that are not HTTP these Deny rules apply without their L7 part", rules)
	}
	return fmt.Sprintf("enforced as written; %s: decided per request on HTTP traffic over the mesh; connections that are not HTTP (or plaintext from outside the mesh) match none of these Allow rules", rules)
}
