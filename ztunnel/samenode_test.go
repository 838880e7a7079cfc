package ztunnel

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
)

// The same-node fast path on the fake network (both pods of the fake env
// are on this node): joined inside the tunnel without HBONE, and admitted,
// recorded and revoked as an HBONE stream would be.

func fastPath(o *NodeOptions) { o.SameNodeFastPath = true }

func TestSameNodeFastPathJoinsLocally(t *testing.T) {
	e := newFakeEnv(t, fastPath)
	dst := netip.AddrPortFrom(e.b.IP, 8080)
	c, err := e.dial(e.a, dst)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "same node"); err != nil || got != "echo:same node" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "outbound", "protocol": "local", "mtls": false, "dst_addr": dst.String(),
		"src_workload": "agents/client", "src_identity": spiffeOf("client"),
		"dst_workload": "agents/server", "dst_identity": spiffeOf("server"),
		"bytes_sent": float64(9), "bytes_received": float64(14), "result": "ok",
	})
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "inbound", "protocol": "local", "dst_addr": dst.String(),
		"src_identity": spiffeOf("client"), "src_workload": "agents/client", "dst_identity": spiffeOf("server"),
		"bytes_sent": float64(9), "bytes_received": float64(14), "result": "ok",
	})
	if st := e.node.transport.Stats(); st.Conns != 0 {
		t.Errorf("hbone pool %+v: the same-node connection went over HBONE", st)
	}
	if p := e.appB.lastPeer(); p.Addr() != e.b.IP {
		t.Errorf("app saw peer %s, want its own pod's address, as over HBONE", p)
	}
	for _, dir := range []string{"outbound", "inbound"} {
		if got := testutil.ToFloat64(e.node.rec.M.Closed.WithLabelValues(dir, "local", "ok")); got != 1 {
			t.Errorf("%s local connections closed ok = %v, want 1", dir, got)
		}
	}
	waitFor(t, "b's connection released", func() bool { return e.node.liveCount("uid-b") == 0 })
	if used := e.node.limits.Conns.Used.Load(); used != 0 {
		t.Errorf("%d connection slots still taken after the connection ended", used)
	}
}

func TestSameNodeFastPathPolicy(t *testing.T) {
	e := newFakeEnv(t, fastPath)
	dst := netip.AddrPortFrom(e.b.IP, 8080)
	// A Deny of the client's identity refuses the connection: the app's
	// connection is reset, both sides log why, nothing is retried.
	deny := agentPolicy("no-client", policy.ActionDeny, fromIDs(idClient))
	e.node.SetConfig(e.config(target(policy.MTLSStrict, deny)))
	c, err := e.dial(e.a, dst)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := roundTrip(c, "x"); got != "" {
		t.Errorf("denied client got %q", got)
	}
	e.logs.wait(t, map[string]any{"msg": authorize.MsgDenied, "policy": "agents/no-client", "reason": "deny-rule"})
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "inbound", "protocol": "local",
		"authz": "deny-rule", "policy": "agents/no-client", "result": "~denied by policy"})
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "protocol": "local", "result": "~denied by policy"})
	// STRICT admits it: the source identity is known, as over mTLS.
	e.node.SetConfig(e.config(target(policy.MTLSStrict)))
	c, err = e.dial(e.a, dst)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "strict"); err != nil || got != "echo:strict" {
		t.Fatalf("under STRICT: round trip = %q, %v", got, err)
	}
	// A live connection is closed when a new config denies it.
	live, err := e.dial(e.a, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b admitted the connection", func() bool { return e.node.liveCount("uid-b") == 1 })
	e.node.SetConfig(e.config(target(policy.MTLSPermissive, deny)))
	readEnds(t, "denied live connection", live)
	if got := testutil.ToFloat64(e.node.rec.M.PolicyClosed.WithLabelValues("agents/no-client", "deny-rule")); got != 1 {
		t.Errorf("policy_closed = %v, want 1", got)
	}
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "inbound", "protocol": "local",
		"result": "~closed by policy change"})
}

func TestSameNodeFastPathDestinationLeaves(t *testing.T) {
	e := newFakeEnv(t, fastPath)
	live, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b admitted the connection", func() bool { return e.node.liveCount("uid-b") == 1 })
	// Removing b closes the connection into it and waits for it, as for
	// b's own connections.
	if err := e.node.RemovePod("uid-b"); err != nil {
		t.Fatalf("remove b: %v", err)
	}
	readEnds(t, "connection into a removed pod", live)
	// Now b is gone: a connection to its address is no longer local.
	c, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(c, "z")
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "protocol": "hbone"})
}
