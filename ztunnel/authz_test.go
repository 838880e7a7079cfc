package ztunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// TestPolicyHBONE: B's policy in force decides every HBONE stream from A
// (identity agents/client): allowed streams reach the app, the others are
// answered 401, logged once as denied (with the deciding policy) and
// carry the decision in their access log line.
func TestPolicyHBONE(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	hc := newHBONEClient(t, e)
	strict := policy.MTLSStrict
	for _, tc := range []struct {
		name   string
		authz  *policy.Target
		allow  bool
		reason policy.Reason
		policy string
		rule   int
	}{
		{"allowed by identity", target(strict, agentPolicy("from-client", policy.ActionAllow, fromIDs(idOther), fromIDs(idClient))),
			true, policy.ReasonAllowRule, "agents/from-client", 1},
		{"allowed by pod selector", target(strict, agentPolicy("from-uid-a", policy.ActionAllow,
			policy.Rule{From: []policy.Peer{{Workloads: policy.SetOf("uid-a")}}})),
			true, policy.ReasonAllowRule, "agents/from-uid-a", 0},
		{"allowed by default", target(strict), true, policy.ReasonDefault, "", -1},
		{"denied by rule", target(strict, agentPolicy("no-client", policy.ActionDeny, fromIDs(idClient))),
			false, policy.ReasonDenyRule, "agents/no-client", 0},
		{"not allowed", target(strict, agentPolicy("only-other", policy.ActionAllow, fromIDs(idOther))),
			false, policy.ReasonNoAllowMatch, "agents/only-other", -1},
		{"denied by default", &policy.Target{MTLSMode: strict, Default: policy.ActionDeny}, false, policy.ReasonDefault, "", -1},
		{"no policy data", nil, false, policy.ReasonNoPolicyData, "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.node.SetConfig(withAuthz(tc.authz))
			verdict := map[bool]string{true: "allow", false: "deny"}[tc.allow]
			counter := e.node.rec.M.PolicyDecisions.WithLabelValues(verdict, tc.policy, string(tc.reason))
			before := testutil.ToFloat64(counter)
			c, err := hc.dial(t, appB)
			if tc.allow {
				if err != nil {
					t.Fatalf("stream refused: %v", err)
				}
				if got, err := roundTrip(c, tc.name); got != "echo:"+tc.name {
					t.Fatalf("round trip = %q, %v", got, err)
				}
			} else {
				want := 401
				if tc.reason == policy.ReasonNoPolicyData {
					want = 503 // the pod is unavailable, not the caller unauthorized
				}
				var se *hbone.StatusError
				if !errors.As(err, &se) || se.Code != want {
					t.Fatalf("dial: %v, want status %d", err, want)
				}
				e.logs.wait(t, map[string]any{
					"msg": "connection denied by policy", "pod": "agents/server",
					"src_identity": spiffeOf("client"), "src_addr": "~198.18.1.1:", "src_workload": "agents/client",
					"dst_addr": appB.String(), "port": 8080, "policy": tc.policy, "rule": tc.rule,
					"reason": string(tc.reason), "mtls": true,
				})
				e.logs.wait(t, map[string]any{
					"msg": "access", "direction": "inbound", "protocol": "hbone", "dst_addr": appB.String(),
					"result": "~denied by policy", "authz": string(tc.reason), "policy": tc.policy,
				})
			}
			if got := testutil.ToFloat64(counter) - before; got != 1 {
				t.Errorf("ztunnel_policy_decisions_total{%s,%q,%s} grew by %v, want 1", verdict, tc.policy, tc.reason, got)
			}
		})
	}
}

// TestPolicyPlaintext: plaintext to a STRICT workload is refused, to a
// PERMISSIVE one it is subject to policy by source address (never by
// identity); a refused connection is closed without dialing the app. The
// client (A) is a pod outside the mesh here, so a podSelector rule matches
// it, as NetworkPolicy would; from the address of a pod in the mesh the
// same rule does not match (a mesh pod never sends plaintext), and the
// connection is counted and logged as suspicious.
func TestPolicyPlaintext(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	ln := listenIn(t, e.b, ":9999")
	perm := policy.MTLSPermissive
	for _, tc := range []struct {
		name   string
		authz  *policy.Target
		allow  bool
		reason policy.Reason
		policy string
		// meshClient makes A a pod in the mesh (enrolled).
		meshClient bool
	}{
		{"strict", target(policy.MTLSStrict), false, policy.ReasonPlaintextStrict, "", false},
		{"permissive default", target(perm), true, policy.ReasonDefault, "", false},
		{"permissive ip block", target(perm, agentPolicy("lan", policy.ActionAllow, fromBlock("198.18.1.0/24"))),
			true, policy.ReasonAllowRule, "agents/lan", false},
		{"permissive other ip block", target(perm, agentPolicy("ten", policy.ActionAllow, fromBlock("10.0.0.0/8"))),
			false, policy.ReasonNoAllowMatch, "agents/ten", false},
		{"permissive denied block", target(perm, agentPolicy("no-lan", policy.ActionDeny, fromBlock("198.18.1.0/24"))),
			false, policy.ReasonDenyRule, "agents/no-lan", false},
		{"identity rule never matches plaintext", target(perm, agentPolicy("from-client", policy.ActionAllow, fromIDs(idClient))),
			false, policy.ReasonNoAllowMatch, "agents/from-client", false},
		{"pod selector matches plaintext", target(perm, agentPolicy("from-uid-a", policy.ActionAllow,
			policy.Rule{From: []policy.Peer{{Workloads: policy.SetOf("uid-a")}}})),
			true, policy.ReasonAllowRule, "agents/from-uid-a", false},
		{"no policy data", nil, false, policy.ReasonNoPolicyData, "", false},
		{"pod selector never matches a mesh pod's address", target(perm, agentPolicy("from-uid-a", policy.ActionAllow,
			policy.Rule{From: []policy.Peer{{Workloads: policy.SetOf("uid-a")}}})),
			false, policy.ReasonNoAllowMatch, "agents/from-uid-a", true},
		{"ip block matches a mesh pod's address", target(perm, agentPolicy("lan", policy.ActionAllow, fromBlock("198.18.1.0/24"))),
			true, policy.ReasonAllowRule, "agents/lan", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := withAuthz(tc.authz)
			for i := range cfg.Workloads {
				if cfg.Workloads[i].UID == "uid-a" {
					cfg.Workloads[i].Enrolled = tc.meshClient
				}
			}
			e.node.SetConfig(cfg)
			suspicious := testutil.ToFloat64(e.node.rec.M.Suspicious.WithLabelValues("mesh_source_address"))
			srcWorkload := "agents/client"
			if tc.meshClient {
				srcWorkload = ""
			}
			dialed := e.appB.peerCount()
			c := plaintextTo(t, e, ln, appB)
			got, _ := roundTrip(c, "plain")
			if !tc.allow {
				if got != "" {
					t.Fatalf("refused connection got reply %q", got)
				}
				rule := -1
				if tc.reason == policy.ReasonDenyRule {
					rule = 0
				}
				e.logs.wait(t, map[string]any{
					"msg": "connection denied by policy", "pod": "agents/server", "src_identity": "",
					"src_addr": netaddr.AddrPort(c.LocalAddr()).String(), "src_workload": srcWorkload,
					"dst_addr": appB.String(), "port": 8080, "reason": string(tc.reason), "policy": tc.policy,
					"rule": rule, "mtls": false,
				})
				e.logs.wait(t, map[string]any{
					"msg": "access", "protocol": "plaintext", "src_addr": netaddr.AddrPort(c.LocalAddr()).String(),
					"authz": string(tc.reason), "policy": tc.policy, "result": "~denied by policy",
				})
				if n := e.appB.peerCount(); n != dialed {
					t.Errorf("the app was dialed for a refused connection")
				}
				checkSuspicious(t, e, tc.meshClient, !tc.allow, suspicious, netaddr.AddrPort(c.LocalAddr()).String())
				return
			}
			checkSuspicious(t, e, tc.meshClient, !tc.allow, suspicious, netaddr.AddrPort(c.LocalAddr()).String())
			if got != "echo:plain" {
				t.Fatalf("reply %q, want echo:plain", got)
			}
			if n := testutil.ToFloat64(e.node.rec.M.PolicyDecisions.WithLabelValues("allow", tc.policy, string(tc.reason))); n < 1 {
				t.Errorf("allow decision not counted")
			}
		})
	}
}

// checkSuspicious checks that a plaintext connection from src was counted
// as suspicious iff it came from a mesh pod's address, and logged when
// logged (one line per address per second: the first case of the table).
func checkSuspicious(t *testing.T, e *env, mesh, logged bool, before float64, src string) {
	t.Helper()
	got := testutil.ToFloat64(e.node.rec.M.Suspicious.WithLabelValues("mesh_source_address")) - before
	if want := map[bool]float64{true: 1, false: 0}[mesh]; got != want {
		t.Errorf("ztunnel_suspicious_connections_total grew by %v, want %v", got, want)
	}
	if mesh && logged {
		e.logs.wait(t, map[string]any{
			"msg":           "plaintext connection from the address of a mesh pod: treated as from outside the mesh (no workload identity)",
			"src_addr":      src,
			"address_owner": "agents/client", "pod": "agents/server",
		})
	}
}

// TestPolicyChangeClosesLiveConns: live connections the new config denies
// (an HBONE stream and a plaintext connection to B:8080) are closed when
// it is applied; an allowed one (HBONE to B:9090) keeps flowing, and the
// pod's live set empties as connections end.
func TestPolicyChangeClosesLiveConns(t *testing.T) {
	e := newEnv(t)
	serveEcho(t, listenIn(t, e.b, ":9090"))
	e.handOverAB()
	e.node.SetConfig(withAuthz(target(policy.MTLSPermissive)))
	hc := newHBONEClient(t, e)
	ln := listenIn(t, e.b, ":9999")

	doomed, err := hc.dial(t, appB)
	if err != nil {
		t.Fatal(err)
	}
	survivor, err := hc.dial(t, netip.AddrPortFrom(ipB, 9090))
	if err != nil {
		t.Fatal(err)
	}
	plain := plaintextTo(t, e, ln, appB)
	for _, c := range []interface{ Write([]byte) (int, error) }{doomed, survivor, plain} {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	pb := e.pod("uid-b")
	waitFor(t, "3 live inbound conns in B", func() bool { return pb.live.Len() == 3 })

	closeApp := agentPolicy("close-8080", policy.ActionDeny, onPorts(8080))
	e.node.SetConfig(withAuthz(target(policy.MTLSPermissive, closeApp)))
	readEnds(t, "denied hbone stream", doomed)
	readEnds(t, "denied plaintext conn", plain)
	for _, mtls := range []bool{true, false} {
		// Plaintext from A, a mesh pod, is not attributed to it.
		src := map[bool]string{true: "agents/client", false: ""}[mtls]
		e.logs.wait(t, map[string]any{
			"msg": "connection closed: no longer allowed by policy", "pod": "agents/server", "mtls": mtls,
			"policy": "agents/close-8080", "rule": 0, "reason": "deny-rule", "port": 8080,
			"dst_addr": appB.String(), "src_workload": src,
		})
		proto := map[bool]string{true: "hbone", false: "plaintext"}[mtls]
		e.logs.wait(t, map[string]any{
			"msg": "access", "protocol": proto, "direction": "inbound", "dst_addr": appB.String(),
			"result": "~closed by policy change: deny deny-rule agents/close-8080 rule 0",
			"authz":  "deny-rule", "policy": "agents/close-8080",
		})
	}
	if got := testutil.ToFloat64(e.node.rec.M.PolicyClosed.WithLabelValues("agents/close-8080", "deny-rule")); got != 2 {
		t.Errorf("ztunnel_policy_closed_connections_total = %v, want 2", got)
	}
	if got, err := roundTrip(survivor, "+rest"); got != "echo:x+rest" {
		t.Fatalf("allowed stream across the policy change: %q, %v", got, err)
	}
	waitFor(t, "B's live set empty", func() bool { return pb.live.Len() == 0 })
	// New connections follow the new policy too.
	if _, err := hc.dial(t, appB); err == nil {
		t.Fatal("new stream to 8080 admitted after the deny")
	}
	// A config that changes nothing closes nothing.
	again, err := hc.dial(t, netip.AddrPortFrom(ipB, 9090))
	if err != nil {
		t.Fatal(err)
	}
	again.Write([]byte("y"))
	waitFor(t, "1 live conn", func() bool { return pb.live.Len() == 1 })
	e.node.SetConfig(withAuthz(target(policy.MTLSPermissive, closeApp)))
	if got, err := roundTrip(again, "z"); got != "echo:yz" {
		t.Fatalf("stream across an unrelated config: %q, %v", got, err)
	}
}

// TestPolicyChangeRacesAdmissions: streams admitted while configs change
// cannot escape the last one: once a Deny-all config is applied, every
// stream that got through ends and the live set empties.
func TestPolicyChangeRacesAdmissions(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	hc := newHBONEClient(t, e)
	open := target(policy.MTLSStrict)
	e.node.SetConfig(withAuthz(open))
	const streams = 20
	conns := make(chan net.Conn, streams)
	var wg sync.WaitGroup
	var delivered atomic.Int32
	for range streams {
		wg.Go(func() {
			if c, err := hc.dial(t, appB); err == nil {
				delivered.Add(1)
				c.Write([]byte("x"))
				conns <- c
			}
		})
	}
	// Configs that still allow, until about half the streams are through.
	pb := e.pod("uid-b")
	for deadline := time.Now().Add(3 * time.Second); delivered.Load() < streams/2 && time.Now().Before(deadline); {
		e.node.SetConfig(withAuthz(target(policy.MTLSStrict)))
		time.Sleep(time.Millisecond)
	}
	e.node.SetConfig(withAuthz(&policy.Target{MTLSMode: policy.MTLSStrict, Default: policy.ActionDeny}))
	wg.Wait()
	close(conns)
	got := 0
	for c := range conns {
		got++
		readEnds(t, fmt.Sprintf("stream %d", got), c)
	}
	waitFor(t, "B's live set empty", func() bool { return pb.live.Len() == 0 })
	if got == 0 {
		t.Fatal("no stream admitted before the deny: the test raced nothing")
	}
	t.Logf("%d of %d streams admitted before the deny", got, streams)
}
