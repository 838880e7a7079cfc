package policy

import "fmt"

// Reason says why a Decision was made.
type Reason string

const (
	// ReasonDenyRule: a Deny policy's rule matched.
	ReasonDenyRule Reason = "deny-rule"
	// ReasonAllowRule: an Allow policy's rule matched.
	ReasonAllowRule Reason = "allow-rule"
	// ReasonNoAllowMatch: Allow policies select the target, none matched.
	ReasonNoAllowMatch Reason = "no-allow-match"
	// ReasonDefault: no Allow policy selects the target; the namespace
	// default decided.
	ReasonDefault Reason = "namespace-default"
	// ReasonPlaintextStrict: plaintext connection to a STRICT target.
	ReasonPlaintextStrict Reason = "plaintext-strict"
	// ReasonNoPolicyData: the target's policy data is not known yet.
	ReasonNoPolicyData Reason = "no-policy-data"
	// ReasonKubeletProbe: plaintext from the target's own node to one of
	// its probe ports, admitted before policies and mTLS mode.
	ReasonKubeletProbe Reason = "kubelet-probe"
)

// Decision is the outcome of Evaluate and why.
type Decision struct {
	Allow  bool
	Reason Reason
	// Policy is "namespace/name" of the deciding policy for
	// ReasonDenyRule and ReasonAllowRule; for ReasonNoAllowMatch the Allow
	// policies that select the target, comma separated; else "".
	Policy string
	// Rule is the deciding rule's index in spec.rules, else -1.
	Rule int
}

// String is a short form for logs: "deny deny-rule ns/name rule 2".
func (d Decision) String() string {
	verb := "deny"
	if d.Allow {
		verb = "allow"
	}
	if d.Policy == "" {
		return verb + " " + string(d.Reason)
	}
	if d.Rule < 0 {
		return verb + " " + string(d.Reason) + " " + d.Policy
	}
	return fmt.Sprintf("%s %s %s rule %d", verb, d.Reason, d.Policy, d.Rule)
}

func decided(allow bool, r Reason) Decision {
	return Decision{Allow: allow, Reason: r, Rule: -1}
}

func byRule(p *Policy, r *Rule, reason Reason) Decision {
	return Decision{Allow: reason == ReasonAllowRule, Reason: reason, Policy: p.Namespace + "/" + p.Name, Rule: r.Index}
}
