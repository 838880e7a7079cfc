package policy

import (
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Evaluate decides whether c may reach the target t; t nil means no policy
// data for the target yet, which denies. When several rules could decide,
// the first in t.Policies order (then rule order) is reported, so callers
// that want stable reports keep t.Policies sorted.
func Evaluate(t *Target, c Conn) Decision { return evaluate(t, c, atL4, nil) }

// Admissible is Evaluate for a connection whose requests will each be
// evaluated (EvaluateRequest): it allows when some request could be
// allowed, taking Allow rules with L7 parts on their L4 part and leaving
// Deny rules with L7 parts to the requests. A denial here denies every
// request.
func Admissible(t *Target, c Conn) Decision { return evaluate(t, c, admissible, nil) }

// EvaluateRequest decides one request q on connection c: rules with L7
// parts must match q as well. A JSON-RPC batch is decided call by call
// (the caller passes each call in q.RPC).
func EvaluateRequest(t *Target, c Conn, q Request) Decision {
	return evaluate(t, c, perRequest, &q)
}

// NeedsRequests reports whether the decision on c can depend on its
// requests: some rule with L7 parts of a policy of t matches c on its L4
// part. When it does not, Evaluate decides every request of c alike.
func NeedsRequests(t *Target, c Conn) bool {
	if t == nil || isProbe(t, c) {
		return false
	}
	c = normalize(c)
	for i := range t.Policies {
		for j := range t.Policies[i].Rules {
			r := &t.Policies[i].Rules[j]
			if (r.L7 || r.HasL7()) && r.matchesPort(c.Port) && r.matchesPeer(c) {
				return true
			}
		}
	}
	return false
}

// NeedsCalls reports whether some rule with a jsonrpc or mcp part of a
// policy of t matches c on its L4 part: the JSON-RPC calls of c's
// requests can decide them.
func NeedsCalls(t *Target, c Conn) bool {
	if t == nil {
		return false
	}
	c = normalize(c)
	for i := range t.Policies {
		for j := range t.Policies[i].Rules {
			r := &t.Policies[i].Rules[j]
			if (r.JSONRPC != nil || r.MCP != nil) && r.matchesPort(c.Port) && r.matchesPeer(c) {
				return true
			}
		}
	}
	return false
}

func evaluate(t *Target, c Conn, m mode, q *Request) Decision {
	if t == nil {
		return decided(false, ReasonNoPolicyData)
	}
	if isProbe(t, c) {
		return decided(true, ReasonKubeletProbe)
	}
	if !c.MTLS && t.MTLSMode == MTLSStrict {
		return decided(false, ReasonPlaintextStrict)
	}
	c = normalize(c)
	if d, ok := firstMatch(t.Policies, ActionDeny, c, m, q); ok {
		return d
	}
	if !selectsAllow(t.Policies) {
		return decided(t.Default != ActionDeny, ReasonDefault)
	}
	if d, ok := firstMatch(t.Policies, ActionAllow, c, m, q); ok {
		return d
	}
	d := decided(false, ReasonNoAllowMatch)
	d.Policy = allowNames(t.Policies)
	return d
}

// isProbe reports whether c is a kubelet probe of t: plaintext from the
// node's own address to one of t's probe ports. (An mTLS peer is a
// workload, never the node.)
func isProbe(t *Target, c Conn) bool {
	return !c.MTLS && c.FromNode && slices.Contains(t.ProbePorts, c.Port)
}

// allowNames joins the names of the Allow policies, which together decided
// a no-allow-match denial.
func allowNames(ps []Policy) string {
	var names []string
	for i := range ps {
		if ps[i].Action == ActionAllow {
			names = append(names, ps[i].Namespace+"/"+ps[i].Name)
		}
	}
	return strings.Join(names, ",")
}

// normalize drops what a plaintext connection cannot claim and unmaps
// IPv4-mapped addresses.
func normalize(c Conn) Conn {
	if !c.MTLS {
		c.Identity = spiffe.ID{}
	}
	c.Addr = c.Addr.Unmap()
	return c
}

func selectsAllow(ps []Policy) bool {
	for i := range ps {
		if ps[i].Action == ActionAllow {
			return true
		}
	}
	return false
}

// firstMatch finds the first rule of a policy with action a matching c.
func firstMatch(ps []Policy, a Action, c Conn, m mode, q *Request) (Decision, bool) {
	reason := ReasonAllowRule
	if a == ActionDeny {
		reason = ReasonDenyRule
	}
	for i := range ps {
		p := &ps[i]
		if p.Action != a {
			continue
		}
		for j := range p.Rules {
			if p.Rules[j].matches(a, c, m, q) {
				return byRule(p, &p.Rules[j], reason), true
			}
		}
	}
	return Decision{}, false
}
