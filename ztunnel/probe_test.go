package ztunnel

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
)

// TestPlaintextKubeletProbe: plaintext from one of the node's addresses
// (A's second address, ipAX, plays the node) to one of B's probe ports is
// admitted whatever B's policies and mTLS mode, counted and logged as a
// kubelet probe; the same source on another port, and another source on
// the probe port, are decided by B's policy as before.
func TestPlaintextKubeletProbe(t *testing.T) {
	e := newEnv(t)
	serveEcho(t, listenIn(t, e.b, ":9090"))
	e.handOverAB()
	routeVia(t, e.b, ipAX, ipA) // B answers the "node" through A
	e.nodeAddrs.set(ipAX)
	ln := listenIn(t, e.b, ":9999")
	onlyOther := agentPolicy("only-other", policy.ActionAllow, withPorts(fromIDs(idOther), 8080))
	denyAll := agentPolicy("deny-all", policy.ActionDeny, policy.Rule{})
	perm, strict := policy.MTLSPermissive, policy.MTLSStrict
	other := netip.AddrPortFrom(ipB, 9090)
	for _, tc := range []struct {
		name   string
		authz  *policy.Target
		src    netip.Addr
		dst    netip.AddrPort
		allow  bool
		reason policy.Reason
		policy string
	}{
		{"node to probe port under an Allow for others", withProbes(target(perm, onlyOther), 8080), ipAX, appB, true, policy.ReasonKubeletProbe, ""},
		{"node to probe port under STRICT and Deny-all", withProbes(target(strict, denyAll), 8080), ipAX, appB, true, policy.ReasonKubeletProbe, ""},
		{"node to other port: policy", withProbes(target(perm, onlyOther), 8080), ipAX, other, false, policy.ReasonNoAllowMatch, "agents/only-other"},
		{"node to other port: STRICT", withProbes(target(strict), 8080), ipAX, other, false, policy.ReasonPlaintextStrict, ""},
		{"node, no probe ports", target(perm, onlyOther), ipAX, appB, false, policy.ReasonNoAllowMatch, "agents/only-other"},
		{"other source to probe port: policy", withProbes(target(perm, onlyOther), 8080), ipA, appB, false, policy.ReasonNoAllowMatch, "agents/only-other"},
		{"other source to probe port: STRICT", withProbes(target(strict), 8080), ipA, appB, false, policy.ReasonPlaintextStrict, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.node.SetConfig(withAuthz(tc.authz))
			verdict := map[bool]string{true: "allow", false: "deny"}[tc.allow]
			counter := e.node.rec.M.PolicyDecisions.WithLabelValues(verdict, tc.policy, string(tc.reason))
			before := testutil.ToFloat64(counter)
			c := plaintextFrom(t, e, ln, tc.src, tc.dst)
			src := netaddr.AddrPort(c.LocalAddr()).String()
			got, _ := roundTrip(c, "probe")
			if tc.allow != (got == "echo:probe") {
				t.Fatalf("reply %q, want allowed=%v", got, tc.allow)
			}
			access := e.logs.wait(t, map[string]any{"msg": "access", "protocol": "plaintext", "src_addr": src})
			if access["authz"] != string(tc.reason) || (access["result"] == "ok") != tc.allow {
				t.Errorf("access line %v, want authz %s, allowed=%v", access, tc.reason, tc.allow)
			}
			if denied := deniedFrom(e, src); denied == tc.allow {
				if tc.allow {
					t.Errorf("an admitted probe was logged as denied")
				} else {
					t.Errorf("a denial was not logged")
				}
			}
			if d := testutil.ToFloat64(counter) - before; d != 1 {
				t.Errorf("ztunnel_policy_decisions_total{%s,%q,%s} grew by %v, want 1", verdict, tc.policy, tc.reason, d)
			}
		})
	}
	t.Run("an open probe connection survives a policy change", func(t *testing.T) {
		e.node.SetConfig(withAuthz(withProbes(target(perm), 8080)))
		c := plaintextFrom(t, e, ln, ipAX, appB)
		c.Write([]byte("x"))
		pb := e.pod("uid-b")
		waitFor(t, "the probe connection is live", func() bool { return pb.live.Len() == 1 })
		e.node.SetConfig(withAuthz(withProbes(target(strict, denyAll), 8080)))
		if got, err := roundTrip(c, "+rest"); got != "echo:x+rest" {
			t.Fatalf("probe connection across STRICT and Deny-all: %q, %v", got, err)
		}
	})
}

// deniedFrom reports whether the node logged a denial of a connection
// from src.
func deniedFrom(e *env, src string) bool {
	for _, m := range e.logs.lines() {
		if m["msg"] == authorize.MsgDenied && m["src_addr"] == src {
			return true
		}
	}
	return false
}

// plaintextFrom is plaintextTo from src, one of A's addresses.
func plaintextFrom(t *testing.T, e *env, ln net.Listener, src netip.Addr, dst netip.AddrPort) net.Conn {
	t.Helper()
	to := netip.AddrPortFrom(ipB, uint16(ln.Addr().(*net.TCPAddr).Port))
	var c net.Conn
	err := netns.Do(int(e.a.Fd()), func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", to.String())
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, src, err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := netaddr.AddrPort(sc.RemoteAddr()).Addr(); got != src {
		t.Fatalf("connection arrived from %s, want %s", got, src)
	}
	e.servePlaintext(e.pod("uid-b"), redirected{sc, net.TCPAddrFromAddrPort(dst)})
	return c
}

// routeVia routes dst (one address) in ns through gw.
func routeVia(t *testing.T, ns *os.File, dst, gw netip.Addr) {
	t.Helper()
	h := nsHandle(t, ns)
	r := &netlink.Route{Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(dst.BitLen(), dst.BitLen())}, Gw: gw.AsSlice()}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}
