package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/podnet/podnettest"
)

// The tests of this file run the whole node (lifecycle, pipeline, HBONE,
// policy, limits) on podnettest's fake pod network: no root needed. The
// privileged tests of the package prove the same paths on the real kernel
// (netns, SO_MARK, the eBPF tables faked there by fakeOrigDst).

// fakeEnv is a node serving pods a (client) and b (server) of a fake
// network, with echo apps on b:8080 and on x:8080, a pod outside the mesh.
type fakeEnv struct {
	t       *testing.T
	net     *podnettest.Network
	node    *Node
	logs    *logBuf
	a, b, x *podnettest.Pod
	appB    *echoApp
	appX    *echoApp
}

func newFakeEnv(t *testing.T, opts ...func(*NodeOptions)) *fakeEnv {
	fn := podnettest.New()
	e := &fakeEnv{t: t, net: fn, logs: &logBuf{}}
	e.a, e.b, e.x = fn.AddPod("uid-a", true), fn.AddPod("uid-b", true), fn.AddPod("uid-x", false)
	e.appB = e.listen(e.b, 8080)
	e.appX = e.listen(e.x, 8080)
	ca, _ := newCAPair(t, td)
	o := NodeOptions{
		NodeName: "n1", Logger: e.logs.logger(), Certs: newManager(t, ca, nil),
		OrigDst: fn, Listeners: fn, PodNet: fn, NodeAddrs: &fakeNodeAddrs{},
		DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second,
	}
	for _, f := range opts {
		f(&o)
	}
	e.node = NewNode(o)
	e.node.SetConfig(e.config(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.node.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node run: %v", err)
		}
		if t.Failed() {
			t.Logf("ztunnel log:\n%s", e.logs)
		}
	})
	for _, p := range []*podnettest.Pod{e.a, e.b} {
		ns, err := os.Open(os.DevNull) // the fake needs no netns
		if err != nil {
			t.Fatal(err)
		}
		name := map[string]string{"uid-a": "client", "uid-b": "server"}[p.UID]
		if err := e.node.AddPod(handoff.Pod{UID: p.UID, Name: name, Namespace: "agents", IPs: []netip.Addr{p.IP}}, ns); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.node.SnapshotDone([]string{"uid-a", "uid-b"}); err != nil {
		t.Fatal(err)
	}
	if err := e.node.Ready(); err != nil {
		t.Fatalf("node not ready: %v", err)
	}
	return e
}

// config is the mesh config of the fake pods; b's authorization data is
// authzB (allow-all when nil). x is outside the mesh: no workload.
func (e *fakeEnv) config(authzB *policy.Target) *meshconfig.Config {
	if authzB == nil {
		authzB = allowAll()
	}
	a := workload("uid-a", "client", e.a.IP)
	b := workload("uid-b", "server", e.b.IP)
	b.Authz = authzB
	return &meshconfig.Config{TrustDomain: td, Workloads: []meshconfig.Workload{a, b}}
}

func (e *fakeEnv) listen(p *podnettest.Pod, port uint16) *echoApp {
	ln, err := p.AppListen(port)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	return serveEcho(e.t, ln)
}

// dial connects an app of p to dst, as the kernel would route it.
func (e *fakeEnv) dial(p *podnettest.Pod, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.AppDial(ctx, dst)
	if err == nil {
		e.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestFakeNetOutboundHBONE(t *testing.T) {
	e := newFakeEnv(t)
	c, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "over hbone"); err != nil || got != "echo:over hbone" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	dst := netip.AddrPortFrom(e.b.IP, 8080).String()
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "outbound", "protocol": "hbone", "mtls": true, "dst_addr": dst,
		"src_workload": "agents/client", "src_identity": spiffeOf("client"),
		"dst_workload": "agents/server", "dst_identity": spiffeOf("server"), "bytes_sent": float64(10), "result": "ok",
	})
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "inbound", "protocol": "hbone", "mtls": true, "dst_addr": dst,
		"src_identity": spiffeOf("client"), "src_workload": "agents/client", "dst_identity": spiffeOf("server"), "result": "ok",
	})
	if p := e.appB.lastPeer(); p.Addr() != e.b.IP {
		t.Errorf("app saw peer %s, want its own pod's address (ztunnel delivers from inside the pod)", p)
	}
}

func TestFakeNetPassthroughAndPlaintext(t *testing.T) {
	e := newFakeEnv(t)
	c, err := e.dial(e.a, netip.AddrPortFrom(e.x.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "out"); err != nil || got != "echo:out" {
		t.Fatalf("passthrough round trip = %q, %v", got, err)
	}
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "protocol": "passthrough", "mtls": false,
		"src_workload": "agents/client", "dst_workload": "", "result": "ok"})
	if p := e.appX.lastPeer(); p.Addr() != e.a.IP {
		t.Errorf("x saw peer %s, want a's address %s", p, e.a.IP)
	}
	// From outside the mesh into b: steered to b's plaintext listener.
	c, err = e.dial(e.x, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "in"); err != nil || got != "echo:in" {
		t.Fatalf("plaintext round trip = %q, %v", got, err)
	}
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "inbound", "protocol": "plaintext", "mtls": false,
		"dst_addr": netip.AddrPortFrom(e.b.IP, 8080).String(), "dst_workload": "agents/server", "result": "ok"})
}

func TestFakeNetPolicy(t *testing.T) {
	e := newFakeEnv(t)
	// STRICT refuses plaintext before the app is dialed.
	e.node.SetConfig(e.config(target(policy.MTLSStrict)))
	c, err := e.dial(e.x, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := roundTrip(c, "x"); got != "" {
		t.Errorf("plaintext under STRICT got %q", got)
	}
	e.logs.wait(t, map[string]any{"msg": "access", "protocol": "plaintext", "authz": "plaintext-strict"})
	// A Deny of the client's identity answers its CONNECT 401.
	deny := agentPolicy("no-client", policy.ActionDeny, fromIDs(idClient))
	e.node.SetConfig(e.config(target(policy.MTLSPermissive, deny)))
	c, err = e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := roundTrip(c, "x"); got != "" {
		t.Errorf("denied client got %q", got)
	}
	e.logs.wait(t, map[string]any{"msg": authorize.MsgDenied, "policy": "agents/no-client", "reason": "deny-rule"})
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "result": "~server answered 401"})
	// A live stream is closed when a new config denies it.
	e.node.SetConfig(e.config(nil))
	live, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b admitted the stream", func() bool { return e.node.liveCount("uid-b") == 1 })
	e.node.SetConfig(e.config(target(policy.MTLSPermissive, deny)))
	readEnds(t, "denied live stream", live)
	if got := testutil.ToFloat64(e.node.rec.M.PolicyClosed.WithLabelValues("agents/no-client", "deny-rule")); got != 1 {
		t.Errorf("policy_closed = %v, want 1", got)
	}
}

func TestFakeNetLimitRefusesAtOnce(t *testing.T) {
	e := newFakeEnv(t, func(o *NodeOptions) { o.MaxConnections = 1 })
	held, err := e.dial(e.a, netip.AddrPortFrom(e.x.IP, 8080)) // passthrough: one slot
	if err != nil {
		t.Fatal(err)
	}
	held.Write([]byte("x"))
	waitFor(t, "the slot taken", func() bool { return e.node.limits.Conns.Used.Load() == 1 })
	c, err := e.dial(e.a, netip.AddrPortFrom(e.x.IP, 8080))
	if err == nil {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection beyond the limit: %v, want a reset", err)
	}
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonMaxConnections)); got != 1 {
		t.Errorf("rejected = %v, want 1", got)
	}
}

// liveCount counts the admitted inbound connections of pod uid.
func (n *Node) liveCount(uid string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.pods[uid]; p != nil {
		return p.live.Len()
	}
	return 0
}

// TestPendingPodSetUpByConfig: a pod handed over before the config knows
// it is set up by the config that brings it, while that same config swap
// re-evaluates the live connections of every pod (go test -race found the
// set-up writing the pod's live-set UID as the swap read it).
func TestPendingPodSetUpByConfig(t *testing.T) {
	e := newFakeEnv(t)
	for i := range 20 {
		uid := fmt.Sprintf("uid-p%d", i)
		p := e.net.AddPod(uid, true)
		ns, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.node.AddPod(handoff.Pod{UID: uid, Name: uid, Namespace: "agents", IPs: []netip.Addr{p.IP}}, ns); err != nil {
			t.Fatal(err)
		}
		c := e.config(nil)
		c.Workloads = append(c.Workloads, workload(uid, uid, p.IP))
		e.node.SetConfig(c) // wakes the set-up of uid...
		e.node.SetConfig(c) // ...while this swap re-evaluates
		waitFor(t, uid+" ready", func() bool {
			e.node.mu.Lock()
			p := e.node.pods[uid]
			e.node.mu.Unlock()
			st, _ := p.getStateOrNil()
			return st == stateReady
		})
	}
}

func (e *fakeEnv) pod(uid string) *pod {
	e.node.mu.Lock()
	defer e.node.mu.Unlock()
	return e.node.pods[uid]
}

// TestGatedAddWaitsForConfig: a gated add (agentd's CNI gate holds the
// pod's containers until it is acknowledged) of a pod the config does not
// know yet returns only once the config brought the pod and it is set up;
// the workload comes as the controller sends a pod before it has an
// address, the addresses come from the hand-off. One the config never
// brings fails after gatePendingWait and stays pending.
func TestGatedAddWaitsForConfig(t *testing.T) {
	e := newFakeEnv(t)
	p := e.net.AddPod("uid-g", true)
	ns, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- e.node.AddPod(handoff.Pod{UID: "uid-g", Name: "gated", Namespace: "agents", IPs: []netip.Addr{p.IP}, Gate: true}, ns)
	}()
	waitFor(t, "uid-g handed over", func() bool { return e.pod("uid-g") != nil })
	select {
	case err := <-done:
		t.Fatalf("gated AddPod returned (%v) before the config knew the pod", err)
	case <-time.After(100 * time.Millisecond):
	}
	c := e.config(nil)
	w := workload("uid-g", "gated", p.IP)
	w.IPs = nil
	c.Workloads = append(c.Workloads, w)
	e.node.SetConfig(c)
	if err := <-done; err != nil {
		t.Fatalf("gated AddPod = %v once the config knew the pod", err)
	}
	if st, err := e.pod("uid-g").getState(); st != stateReady {
		t.Fatalf("uid-g %s (%v) when its gated add returned", st, err)
	}
	if got := e.pod("uid-g").flow.IPs; len(got) != 1 || got[0] != p.IP {
		t.Errorf("uid-g addresses %v, want the hand-off's %v", got, p.IP)
	}

	q := e.net.AddPod("uid-never", true)
	ns2, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	err = e.node.AddPod(handoff.Pod{UID: "uid-never", Name: "never", Namespace: "agents", IPs: []netip.Addr{q.IP}, Gate: true}, ns2)
	if err == nil || !strings.Contains(err.Error(), "not in ztunnel's mesh config") {
		t.Fatalf("gated AddPod of a pod the config never brings = %v", err)
	}
	if st, _ := e.pod("uid-never").getState(); st != statePending {
		t.Errorf("uid-never %s, want pending", st)
	}
}
