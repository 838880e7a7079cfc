package policy

import (
	"testing"
)

func TestEvaluate(t *testing.T) {
	webOnly := pol("web-only", allow, from(Peer{Identities: SetOf(webID)}))
	denyAdmin := pol("no-admin", deny, from(Peer{Identities: SetOf(adminID)}))
	denySSH := pol("no-ssh", deny, Rule{}.on(port(22)))
	tests := []struct {
		name string
		t    *Target
		c    Conn
		want Decision
	}{
		{"no policy data", nil, mtls(webID, "10.0.0.1", 80),
			Decision{Reason: ReasonNoPolicyData, Rule: -1}},
		{"no policies: default allow", target(), mtls(webID, "10.0.0.1", 80),
			Decision{Allow: true, Reason: ReasonDefault, Rule: -1}},
		{"no policies: default deny", target().defaultDeny(), mtls(webID, "10.0.0.1", 80),
			Decision{Reason: ReasonDefault, Rule: -1}},
		{"only deny policies, no match: default", target(denyAdmin).defaultDeny(), mtls(webID, "10.0.0.1", 80),
			Decision{Reason: ReasonDefault, Rule: -1}},
		{"allow rule matches", target(webOnly), mtls(webID, "10.0.0.1", 80),
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/web-only", Rule: 0}},
		{"allow selects, no match", target(webOnly), mtls(otherID, "10.0.0.1", 80),
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/web-only", Rule: -1}},
		{"allow with no rules allows nothing", target(pol("none", allow)), mtls(webID, "10.0.0.1", 80),
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/none", Rule: -1}},
		{"no match names every allow policy", target(webOnly, denyAdmin, pol("none", allow)), mtls(otherID, "10.0.0.1", 80),
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/web-only,shop/none", Rule: -1}},
		{"deny beats allow", target(pol("all", allow, Rule{}), denyAdmin), mtls(adminID, "10.0.0.1", 80),
			Decision{Reason: ReasonDenyRule, Policy: "shop/no-admin", Rule: 0}},
		{"deny beats default allow", target(denySSH), mtls(webID, "10.0.0.1", 22),
			Decision{Reason: ReasonDenyRule, Policy: "shop/no-ssh", Rule: 0}},
		{"deny on other port: default", target(denySSH), mtls(webID, "10.0.0.1", 23),
			Decision{Allow: true, Reason: ReasonDefault, Rule: -1}},
		{"several policies: second allow matches", target(webOnly, pol("admin", allow, from(Peer{Identities: SetOf(otherID)}), from(Peer{Identities: SetOf(adminID)}))),
			mtls(adminID, "10.0.0.1", 80), Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/admin", Rule: 1}},
		{"several policies: first deny reported", target(denyAdmin, pol("no-admin-2", deny, from(Peer{Identities: SetOf(adminID)}))),
			mtls(adminID, "10.0.0.1", 80), Decision{Reason: ReasonDenyRule, Policy: "shop/no-admin", Rule: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { check(t, tc.t, tc.c, tc.want) })
	}
}

// TestEvaluateProbes: plaintext from the node to a probe port passes
// STRICT, Deny rules and Allow policies; anything else about it (another
// port, another source, mTLS, no policy data) is decided as usual.
func TestEvaluateProbes(t *testing.T) {
	denyAll := pol("deny-all", deny, Rule{})
	webOnly := pol("web-only", allow, from(Peer{Identities: SetOf(webID)}).on(port(8080)))
	probe := Decision{Allow: true, Reason: ReasonKubeletProbe, Rule: -1}
	tests := []struct {
		name string
		t    *Target
		c    Conn
		want Decision
	}{
		{"node to probe port, allow-only policy", target(webOnly).permissive().probes(8080, 8081), plain("10.0.0.1", 8081).fromNode(), probe},
		{"node to probe port, strict and deny-all", target(denyAll).defaultDeny().probes(8080), plain("10.0.0.1", 8080).fromNode(), probe},
		{"node to other port: policy", target(webOnly).permissive().probes(8080), plain("10.0.0.1", 9090).fromNode(),
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/web-only", Rule: -1}},
		{"node to other port: strict", target(webOnly).probes(8080), plain("10.0.0.1", 9090).fromNode(),
			Decision{Reason: ReasonPlaintextStrict, Rule: -1}},
		{"other address to probe port: policy", target(webOnly).permissive().probes(8080), plain("10.0.0.2", 8080),
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/web-only", Rule: -1}},
		{"other address to probe port: strict", target(webOnly).probes(8080), plain("10.0.0.2", 8080),
			Decision{Reason: ReasonPlaintextStrict, Rule: -1}},
		{"mtls never counts as the node", target(denyAll).probes(8080), mtls(webID, "10.0.0.1", 8080).fromNode(),
			Decision{Reason: ReasonDenyRule, Policy: "shop/deny-all", Rule: 0}},
		{"no probe ports", target(denyAll), plain("10.0.0.1", 8080).fromNode(),
			Decision{Reason: ReasonPlaintextStrict, Rule: -1}},
		{"no policy data", nil, plain("10.0.0.1", 8080).fromNode(), Decision{Reason: ReasonNoPolicyData, Rule: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { check(t, tc.t, tc.c, tc.want) })
	}
}

func check(t *testing.T, tg *Target, c Conn, want Decision) {
	t.Helper()
	if got := Evaluate(tg, c); got != want {
		t.Errorf("Evaluate = %v (%+v), want %v (%+v)", got, got, want, want)
	}
}

// allowed is the decision of an Allow policy named "p" matching by rule i.
func allowed(i int) Decision {
	return Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/p", Rule: i}
}

var noMatch = Decision{Reason: ReasonNoAllowMatch, Policy: "shop/p", Rule: -1}

func TestEvaluateSelectors(t *testing.T) {
	tests := []struct {
		name string
		peer Peer
		c    Conn
		want Decision
	}{
		{"service account", Peer{Identities: SetOf(webID)}, mtls(webID, "10.0.0.1", 80), allowed(0)},
		{"service account other", Peer{Identities: SetOf(webID)}, mtls(adminID, "10.0.0.1", 80), noMatch},
		{"service account plaintext", Peer{Identities: SetOf(webID)}, plain("10.0.0.1", 80), noMatch},
		{"namespace", Peer{Namespaces: SetOf("ops")}, mtls(adminID, "10.0.0.1", 80), allowed(0)},
		{"namespace other", Peer{Namespaces: SetOf("ops")}, mtls(webID, "10.0.0.1", 80), noMatch},
		{"namespace plaintext", Peer{Namespaces: SetOf("ops")}, plain("10.0.0.1", 80), noMatch},
		{"namespace selector matched none", Peer{Namespaces: SetOf[string]()}, mtls(adminID, "10.0.0.1", 80), noMatch},
		{"pod", Peer{Workloads: SetOf("uid-a")}, mtls(webID, "10.0.0.1", 80).fromWorkload("uid-a"), allowed(0)},
		{"pod plaintext", Peer{Workloads: SetOf("uid-a")}, plain("10.0.0.1", 80).fromWorkload("uid-a"), allowed(0)},
		{"pod other", Peer{Workloads: SetOf("uid-a")}, mtls(webID, "10.0.0.1", 80).fromWorkload("uid-b"), noMatch},
		{"pod unknown", Peer{Workloads: SetOf("uid-a")}, mtls(webID, "10.0.0.1", 80), noMatch},
		{"ip block", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8")}}, plain("10.9.9.9", 80), allowed(0)},
		{"ip block outside", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8")}}, plain("11.0.0.1", 80), noMatch},
		{"ip block except", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8", "10.1.0.0/16")}}, plain("10.1.2.3", 80), noMatch},
		{"ip block beside except", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8", "10.1.0.0/16")}}, plain("10.2.2.3", 80), allowed(0)},
		{"ip block second", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8"), block("fd00::/64")}}, mtls(webID, "fd00::5", 80), allowed(0)},
		{"ip block mapped v4", Peer{IPBlocks: []IPBlock{block("10.0.0.0/8")}}, plain("::ffff:10.0.0.1", 80), allowed(0)},
		{"and: id and ip", Peer{Identities: SetOf(webID), IPBlocks: []IPBlock{block("10.0.0.0/8")}}, mtls(webID, "11.0.0.1", 80), noMatch},
		{"and: both match", Peer{Identities: SetOf(webID), IPBlocks: []IPBlock{block("10.0.0.0/8")}}, mtls(webID, "10.0.0.1", 80), allowed(0)},
		{"empty peer matches any", Peer{}, plain("192.0.2.1", 80), allowed(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := target(pol("p", allow, from(tc.peer))).permissive()
			check(t, tg, tc.c, tc.want)
		})
	}
}

func TestEvaluatePorts(t *testing.T) {
	rule := Rule{}.on(port(80), PortRange{From: 9000, To: 9010})
	tests := []struct {
		port uint16
		want Decision
	}{
		{80, allowed(0)}, {81, noMatch}, {79, noMatch},
		{8999, noMatch}, {9000, allowed(0)}, {9005, allowed(0)}, {9010, allowed(0)}, {9011, noMatch},
	}
	for _, tc := range tests {
		check(t, target(pol("p", allow, rule)), mtls(webID, "10.0.0.1", tc.port), tc.want)
	}
	anyPort := pol("p", allow, from(Peer{Identities: SetOf(webID)}))
	check(t, target(anyPort), mtls(webID, "10.0.0.1", 65535), allowed(0))
}

func TestEvaluateMTLSMode(t *testing.T) {
	open := pol("p", allow, Rule{})
	strictPlain := Decision{Reason: ReasonPlaintextStrict, Rule: -1}
	check(t, target(open), plain("10.0.0.1", 80), strictPlain)
	check(t, target(), plain("10.0.0.1", 80), strictPlain)
	// Unset mode is PERMISSIVE, the default: plaintext is then subject to
	// policy by source address like any other connection.
	check(t, &Target{Default: allow}, plain("10.0.0.1", 80), Decision{Allow: true, Reason: ReasonDefault, Rule: -1})
	check(t, target(open), mtls(webID, "10.0.0.1", 80), allowed(0))
	check(t, target(open).permissive(), plain("10.0.0.1", 80), allowed(0))
	check(t, target().permissive(), plain("10.0.0.1", 80), Decision{Allow: true, Reason: ReasonDefault, Rule: -1})
	// A plaintext connection cannot claim an identity.
	c := plain("10.0.0.1", 80)
	c.Identity = webID
	check(t, target(pol("p", allow, from(Peer{Identities: SetOf(webID)}))).permissive(), c, noMatch)
}

func TestEvaluateL7(t *testing.T) {
	web := Peer{Identities: SetOf(webID)}
	// Under Allow an L7 rule matches nothing, even when its L4 part does.
	check(t, target(pol("p", allow, from(web).l7())), mtls(webID, "10.0.0.1", 80), noMatch)
	check(t, target(pol("p", allow, from(web).l7(), from(web))), mtls(webID, "10.0.0.1", 80), allowed(1))
	// Under Deny it is enforced without its L7 part: stricter.
	d := Decision{Reason: ReasonDenyRule, Policy: "shop/p", Rule: 0}
	check(t, target(pol("p", deny, from(web).l7())), mtls(webID, "10.0.0.1", 80), d)
	check(t, target(pol("p", deny, from(web).l7())), mtls(adminID, "10.0.0.1", 80), Decision{Allow: true, Reason: ReasonDefault, Rule: -1})
}

func TestDecisionString(t *testing.T) {
	for _, tc := range []struct {
		d    Decision
		want string
	}{
		{allowed(2), "allow allow-rule shop/p rule 2"},
		{Decision{Reason: ReasonNoPolicyData, Rule: -1}, "deny no-policy-data"},
		{Decision{Reason: ReasonNoAllowMatch, Policy: "shop/a,shop/b", Rule: -1}, "deny no-allow-match shop/a,shop/b"},
	} {
		if got := tc.d.String(); got != tc.want {
			t.Errorf("String = %q, want %q", got, tc.want)
		}
	}
}

func TestSet(t *testing.T) {
	var anySet Set[string]
	if !anySet.Any() || !anySet.Has("x") || !anySet.Has("") {
		t.Error("zero Set must match everything")
	}
	s := SetOf("a")
	if s.Any() || !s.Has("a") || s.Has("b") || s.Has("") || s.Len() != 1 {
		t.Errorf("SetOf(a) wrong: %+v", s)
	}
	if SetOf[string]().Has("a") {
		t.Error("empty SetOf must match nothing")
	}
	if !SetOf("a", "b").Equal(SetOf("b", "a")) || SetOf("a").Equal(SetOf("b")) || anySet.Equal(SetOf[string]()) {
		t.Error("Equal wrong")
	}
}
