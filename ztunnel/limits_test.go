package ztunnel

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// holdOutbound opens a connection from pod A through the outbound listener
// and sends a byte; the passthrough upstream (the echo app on X) answers
// only after a half-close, so the connection stays open until closed.
func holdOutbound(t *testing.T, e *env) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := netns.Do(int(e.a.Fd()), func() (err error) {
		c, err = net.DialTimeout("tcp", "127.0.0.1:15001", 5*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("x")); err != nil {
		return nil, err
	}
	return c, nil
}

// refusedFast checks that c (or its dial, err) was reset well before any
// timeout would have ended it.
func refusedFast(t *testing.T, c net.Conn, err error) {
	t.Helper()
	if err == nil {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("connection beyond the limit: %v, want a reset", err)
	}
}

func TestMaxConnectionsRefusesAtOnceAndRecovers(t *testing.T) {
	e := newEnv(t, func(o *NodeOptions) { o.MaxConnections = 3 })
	e.handOverAB()
	e.orig.set(appX) // passthrough: one slot per connection
	var held []net.Conn
	for range 3 {
		c, err := holdOutbound(t, e)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, "3 connections carried", func() bool { return e.node.limits.Conns.Used.Load() == 3 })
	start := time.Now()
	for range 5 {
		c, err := holdOutbound(t, e)
		refusedFast(t, c, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("5 refusals took %v", d)
	}
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonMaxConnections)); got != 5 {
		t.Errorf("rejected{outbound,max_connections} = %v, want 5", got)
	}
	if n := e.logs.count(map[string]any{"msg": "~connection limit reached"}); n != 1 {
		t.Errorf("%d 'limit reached' log lines for one burst, want 1", n)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, "the held connections released", func() bool { return e.node.limits.Conns.Used.Load() == 0 })
	e.node.limits.Refused.Flush(time.Now().Add(2 * limits.RefusalQuiet))
	e.logs.wait(t, map[string]any{"msg": "~burst over", "refused_max_connections": float64(5)})
	// Recovered: a connection works again.
	c := dialIn(t, e.a, "127.0.0.1:15001")
	if got, err := roundTrip(c, "again"); err != nil || got != "echo:again" {
		t.Errorf("after the burst: %q, %v", got, err)
	}
}

// TestRefusedOutboundConsumesOrigDst: an outbound connection refused by a
// limit still consumes the original destination the connect hook left
// for it; otherwise each refused connection of a burst leaves an orig_dst
// entry behind until the LRU map evicts it.
func TestRefusedOutboundConsumesOrigDst(t *testing.T) {
	e := newEnv(t, func(o *NodeOptions) { o.MaxConnections = 1 })
	e.handOverAB()
	e.orig.set(appX)
	if _, err := holdOutbound(t, e); err != nil {
		t.Fatal(err)
	}
	// The slot is taken at accept, the original destination looked up
	// after: wait for both.
	waitFor(t, "1 connection carried", func() bool { return e.node.limits.Conns.Used.Load() == 1 && e.orig.count() == 1 })
	held := e.orig.last()
	for range 3 {
		c, err := holdOutbound(t, e)
		refusedFast(t, c, err)
	}
	if n := e.orig.count(); n != 4 {
		t.Fatalf("%d orig_dst lookups for 1 carried and 3 refused connections, want 4", n)
	}
	if got := e.orig.last(); got.cookie != held.cookie || got.dst != held.dst || got.src == held.src {
		t.Errorf("refused connection's lookup %+v, want pod A's cookie and 15001 of %+v, another source", got, held)
	}
}

func TestFDBudgetRefusesBeforeEMFILE(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(appX)                    // passthrough: two sockets per connection
	pods := e.node.limits.PodFDs.Load() // the pods' own sockets take units too
	e.node.limits.FDs.Max.Store(pods + 4)
	for range 2 {
		if _, err := holdOutbound(t, e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "4 sockets in use", func() bool { return e.node.limits.FDs.Used.Load() == pods+4 })
	c, err := holdOutbound(t, e)
	refusedFast(t, c, err)
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonFDBudget)); got != 1 {
		t.Errorf("rejected{outbound,fd_budget} = %v, want 1", got)
	}
	// One unit left: the accept fits, the upstream dial does not.
	e.node.limits.FDs.Max.Store(pods + 5)
	c, err = holdOutbound(t, e)
	refusedFast(t, c, err)
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "result": "~connection limit"})
	waitFor(t, "the failed connection's socket released", func() bool { return e.node.limits.FDs.Used.Load() == pods+4 })
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonFDBudget)); got != 2 {
		t.Errorf("rejected{outbound,fd_budget} = %v after the refused dial, want 2", got)
	}
}

// TestPodsShareFDBudget: a pod's own sockets (netns handle, listeners,
// DNS sockets) take fd budget units, so a node handed more pods than its
// open-file limit carries sets up what fits, reports the rest failed with
// the reason, and keeps serving the pods it has; the next reconcile sets
// up the waiting pod once the budget has room, and the units come back
// when a pod goes.
func TestPodsShareFDBudget(t *testing.T) {
	e := newEnv(t)
	perPod := int64(1 + podnet.Sockets() + dnsproxy.Sockets())
	e.node.limits.FDs.Max.Store(perPod + 1) // A, and B's netns handle only
	e.handOver("uid-a", "client", e.a, ipA, ip6A)
	if err := e.node.SnapshotDone([]string{"uid-a", "uid-b"}); err != nil {
		t.Fatal(err)
	}
	if got := e.node.limits.PodFDs.Load(); got != perPod {
		t.Fatalf("pod A holds %d fd units, want %d", got, perPod)
	}
	fd, err := unix.Dup(int(e.b.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	err = e.node.AddPod(handoff.Pod{UID: "uid-b", Name: "server", Namespace: "agents", IPs: []netip.Addr{ipB, ip6B}}, os.NewFile(uintptr(fd), "netns-b"))
	if !errors.Is(err, limits.ErrPodFDs) {
		t.Fatalf("AddPod(B) beyond the budget = %v, want %v", err, limits.ErrPodFDs)
	}
	if st, perr := e.pod("uid-b").getState(); st != stateFailed || !errors.Is(perr, limits.ErrPodFDs) {
		t.Errorf("B: %s, %v; want failed for the fd budget", st, perr)
	}
	if err := e.node.Ready(); err == nil || !strings.Contains(err.Error(), "agents/server (failed)") {
		t.Errorf("Ready() = %v, want B failed", err)
	}
	for _, k := range e.lst.keys() {
		if strings.Contains(k, "198.18.1.2") {
			t.Errorf("B's listener %s registered although it was refused", k)
		}
	}
	// A full budget refuses the next netns outright, and closes it.
	fd, err = unix.Dup(int(e.x.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.node.AddPod(handoff.Pod{UID: "uid-x", Name: "x", Namespace: "agents"}, os.NewFile(uintptr(fd), "netns-x")); !errors.Is(err, limits.ErrPodFDs) {
		t.Errorf("AddPod(X) on a full budget = %v, want %v", err, limits.ErrPodFDs)
	}
	if e.pod("uid-x") != nil {
		t.Error("X kept although refused")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("X's netns fd %d still open after the refusal (%v)", fd, err)
	}
	// Room for B's sockets: B is set up at the next reconcile (the loop's
	// own may come first; this one is then a no-op).
	e.node.limits.FDs.Max.Add(perPod - 1)
	e.node.reconcile()
	if st, perr := e.pod("uid-b").getState(); st != stateReady {
		t.Fatalf("B with room in the budget: %s, %v; want ready", st, perr)
	}
	// The budget is full again, with pods only: A's connection is
	// refused; given room for one (two sockets) A serves.
	var full net.Conn
	if err := netns.Do(int(e.a.Fd()), func() (err error) {
		full, err = net.DialTimeout("tcp", "127.0.0.1:15001", 5*time.Second)
		return err
	}); err == nil {
		defer full.Close()
		if got, err := roundTrip(full, "full"); got == "echo:full" {
			t.Fatalf("A's round trip on a full budget = %q, %v; want refused", got, err)
		}
	}
	e.node.limits.FDs.Max.Add(2)
	e.orig.set(appX)
	if got, err := roundTrip(dialIn(t, e.a, "127.0.0.1:15001"), "still"); got != "echo:still" {
		t.Fatalf("A's round trip with room for it = %q, %v", got, err)
	}
	// A leaves: its units come back.
	if err := e.node.RemovePod("uid-a"); err != nil {
		t.Fatal(err)
	}
	if got := e.node.limits.PodFDs.Load(); got != perPod {
		t.Errorf("after A left pods hold %d fd units, want B's %d", got, perPod)
	}
	if err := e.node.RemovePod("uid-b"); err != nil {
		t.Fatal(err)
	}
	if used, pods := e.node.limits.FDs.Used.Load(), e.node.limits.PodFDs.Load(); used != 0 || pods != 0 {
		t.Errorf("after every pod left: %d fd units in use, %d by pods; want 0", used, pods)
	}
}
