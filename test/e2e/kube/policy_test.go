package kube

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

const (
	validatorPort = 8080 // the port the policies allow
	otherPort     = 9090 // also served by data-validator, never allowed
	mtlsMode      = "agentmesh.io/mtls-mode"
)

const onlyPlanner = `
podSelector: {matchLabels: {app: data-validator}}
action: Allow
rules:
- from: [{serviceAccounts: [planner]}]
  ports: [{port: 8080}]
`

// TestAgentPolicy: with only planner -> data-validator:8080 allowed, that
// call works, another source gets HBONE 401 (logged with the deciding
// policy), another port is refused; a Deny closes an open allowed
// connection; STRICT refuses plaintext from outside the mesh while
// PERMISSIVE admits it subject to ipBlocks; deleting the policy restores
// the namespace default. meshctl explains the decisions.
func TestAgentPolicy(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "planner", "validator", "billing")
	namespace(ctx, t, l, "legacy", false)
	dv := startPod(ctx, t, l, portsPod("shop", "data-validator", "validator", "n2", map[string]string{"app": "data-validator"}, validatorPort, otherPort), true)
	planner := startPod(ctx, t, l, echoPod("shop", "planner", "planner", "n1", nil), true)
	billing := startPod(ctx, t, l, echoPod("shop", "billing", "billing", "n1", nil), true)
	batch := startPod(ctx, t, l, echoPod("legacy", "batch", "", "n1", nil), false)
	batch2 := startPod(ctx, t, l, echoPod("legacy", "batch2", "", "n1", nil), false)
	allowedPort := netip.AddrPortFrom(dv.IPv4(), validatorPort)
	deniedPort := netip.AddrPortFrom(dv.IPv4(), otherPort)
	pol := newPolicies(t, l)

	// No policy selects data-validator: the namespace default (Allow).
	for _, p := range []*lab.Pod{planner, billing, batch} {
		if err := sendTo(ctx, l, p, allowedPort); err != nil {
			t.Fatalf("before any policy: %v", err)
		}
	}

	applied := time.Now()
	pol.apply(ctx, "shop", "only-planner", onlyPlanner)
	took := until(ctx, t, l, billing, allowedPort, false)
	t.Logf("only-planner applied -> billing refused after %s", took.Round(time.Millisecond))
	if st, reason := pol.accepted(ctx, "shop", "only-planner"); st != "True" || reason != "Accepted" {
		t.Errorf("only-planner Accepted = %s/%s, want True/Accepted", st, reason)
	}

	t.Run("allowed source and port", func(t *testing.T) {
		if err := sendTo(ctx, l, planner, allowedPort); err != nil {
			t.Fatal(err)
		}
		meshLog(ctx, t, l, 2, "inbound", planner.IPv4(), dv.IPv4(), spiffeID("shop", "planner"), spiffeID("shop", "validator"))
	})
	t.Run("other source gets 401", func(t *testing.T) {
		line := denyLine(ctx, t, l, 2, "connection denied by policy", billing.IPv4(), validatorPort)
		if line.Str("src_identity") != spiffeID("shop", "billing") || line.Str("policy") != "shop/only-planner" ||
			line.Str("reason") != "no-allow-match" {
			t.Errorf("deny line = %v, want src_identity billing, policy shop/only-planner, reason no-allow-match", line)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		a, err := l.WaitAccessLog(wctx, 1, func(a lab.AccessLog) bool {
			return a.Direction == "outbound" && a.Dst() == allowedPort && a.Time.After(applied) && strings.Contains(a.Result, "401")
		})
		if err != nil {
			t.Fatalf("n1 has no outbound access log with a 401 from data-validator: %v", err)
		}
		t.Logf("n1 outbound result: %s", a.Result)
	})
	t.Run("other port refused", func(t *testing.T) {
		if err := sendTo(ctx, l, planner, deniedPort); err == nil {
			t.Fatalf("planner -> data-validator:%d allowed, want refused", otherPort)
		}
		line := denyLine(ctx, t, l, 2, "connection denied by policy", planner.IPv4(), otherPort)
		if line.Str("policy") != "shop/only-planner" {
			t.Errorf("deny line = %v, want policy shop/only-planner", line)
		}
	})
	t.Run("meshctl explains", func(t *testing.T) {
		out := meshctl(ctx, t, l, 2, "shop/planner", "shop/data-validator", validatorPort)
		t.Logf("meshctl:\n%s", out)
		if !strings.Contains(out, "decision: ALLOW by shop/only-planner rule 0 (allow-rule)") {
			t.Errorf("planner:8080 not explained as allowed by shop/only-planner rule 0")
		}
		out = meshctl(ctx, t, l, 2, "shop/billing", "shop/data-validator", validatorPort)
		if !strings.Contains(out, "decision: DENY: Allow policies select shop/data-validator (shop/only-planner)") {
			t.Errorf("billing:8080 not explained as denied for want of a matching Allow rule:\n%s", out)
		}
	})
	t.Run("deny closes an open connection", func(t *testing.T) {
		stream := streamAsync(ctx, l, planner, dv.IPv4(), time.Minute)
		select {
		case err := <-stream:
			t.Fatalf("stream ended before the Deny: %v", err)
		case <-time.After(2 * time.Second):
		}
		pol.apply(ctx, "shop", "deny-planner", `
podSelector: {matchLabels: {app: data-validator}}
action: Deny
rules:
- from: [{serviceAccounts: [planner]}]
  ports: [{port: 8080}]
`)
		select {
		case err := <-stream:
			if err == nil {
				t.Fatal("stream ran its full minute after the Deny")
			}
			t.Logf("stream ended: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("open connection not closed 30s after the Deny")
		}
		line := denyLine(ctx, t, l, 2, "connection closed: no longer allowed by policy", planner.IPv4(), validatorPort)
		if line.Str("policy") != "shop/deny-planner" || line.Str("reason") != "deny-rule" {
			t.Errorf("close line = %v, want policy shop/deny-planner, reason deny-rule", line)
		}
		if err := sendTo(ctx, l, planner, allowedPort); err == nil {
			t.Error("new planner connection allowed under deny-planner")
		}
		pol.delete(ctx, "shop", "deny-planner")
		until(ctx, t, l, planner, allowedPort, true)
	})
	t.Run("plaintext: PERMISSIVE with ipBlocks, then STRICT", func(t *testing.T) {
		if err := sendTo(ctx, l, batch, allowedPort); err == nil {
			t.Fatal("plaintext from legacy/batch allowed, but only-planner admits only planner's identity")
		}
		pol.apply(ctx, "shop", "only-planner", onlyPlanner+`- from: [{ipBlocks: [{cidr: `+batch.IPv4().String()+`/32}]}]
  ports: [{port: 8080}]
`)
		since := time.Now()
		until(ctx, t, l, batch, allowedPort, true)
		plainInbound(ctx, t, l, 2, since, batch.IPv4(), dv.IPv4())
		if err := sendTo(ctx, l, batch2, allowedPort); err == nil {
			t.Error("plaintext from legacy/batch2 (outside the ipBlock) allowed")
		}
		annotateNamespace(ctx, t, l, "shop", mtlsMode, "STRICT")
		until(ctx, t, l, batch, allowedPort, false)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := lab.WaitLogLine(wctx, l.DaemonLog(2, "ztunnel"), "connection denied by policy", func(ll lab.LogLine) bool {
			return strings.HasPrefix(ll.Str("src_addr"), batch.IPv4().String()+":") && ll.Str("reason") == "plaintext-strict"
		}); err != nil {
			t.Errorf("no plaintext-strict denial of legacy/batch: %v", err)
		}
		if err := sendTo(ctx, l, planner, allowedPort); err != nil {
			t.Errorf("planner under STRICT: %v", err)
		}
		annotateNamespace(ctx, t, l, "shop", mtlsMode, "")
		until(ctx, t, l, batch, allowedPort, true)
	})
	t.Run("deleting the policy restores the default", func(t *testing.T) {
		pol.delete(ctx, "shop", "only-planner")
		took := until(ctx, t, l, billing, allowedPort, true)
		t.Logf("only-planner deleted -> billing allowed after %s", took.Round(time.Millisecond))
		for _, p := range []*lab.Pod{planner, batch2} {
			if err := sendTo(ctx, l, p, deniedPort); err != nil {
				t.Errorf("namespace default Allow: %v", err)
			}
		}
	})
}
