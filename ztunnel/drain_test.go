package ztunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// optOutConfig returns testConfig(true) with the named pods not enrolled.
func optOutConfig(uids ...string) *meshconfig.Config {
	c := testConfig(true)
	for i := range c.Workloads {
		for _, u := range uids {
			if c.Workloads[i].UID == u {
				c.Workloads[i].Enrolled = false
			}
		}
	}
	return c
}

// TestOptOutDrainsLiveConnections: a pod that opts out (still in the config,
// not enrolled) stops accepting at once, but the connection ztunnel proxies
// for it, outbound from A and inbound to B, runs to its end; then the pods
// are released. A pod that left the config is removed, closing its
// connections.
func TestOptOutDrainsLiveConnections(t *testing.T) {
	e := newEnv(t)
	d := newDrainingNode(e.node)
	d.wait = 200 * time.Millisecond
	e.handOverAB()
	e.orig.set(appB)
	live := dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("pending"))
	waitFor(t, "conn active in B", func() bool { return e.pod("uid-b").active.Load() > 0 })

	e.node.SetConfig(optOutConfig("uid-a", "uid-b"))
	for _, uid := range []string{"uid-a", "uid-b"} {
		if err := d.RemovePod(uid); err != nil {
			t.Fatalf("drain %s: %v", uid, err)
		}
		if e.pod(uid) != nil {
			t.Fatalf("%s still handed over after its opt-out", uid)
		}
	}
	if keys := e.lst.keys(); len(keys) != 0 {
		t.Errorf("SOCKHASH entries of drained pods: %v", keys)
	}
	err := netns.Do(int(e.a.Fd()), func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:15001", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("A's outbound listener still accepts after the opt-out")
	}
	if got, err := roundTrip(live, "+rest"); got != "echo:pending+rest" {
		t.Fatalf("live conn across the opt-out: %q, %v", got, err)
	}
	waitFor(t, "drained pods released", func() bool {
		return len(e.certs.Snapshot()) == 0 && strings.Contains(e.logs.String(), "drained pod released")
	})
	if err := d.waitUntil(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}

	// Enrolled again and opted out with a connection that outlives the
	// drain bound: it is closed then.
	d.maxDrain = 300 * time.Millisecond
	e.node.SetConfig(testConfig(true))
	e.handOverAB()
	live = dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("x"))
	waitFor(t, "conn active in B", func() bool { return e.pod("uid-b").active.Load() > 0 })
	e.node.SetConfig(optOutConfig("uid-b"))
	if err := d.RemovePod("uid-b"); err != nil {
		t.Fatal(err)
	}
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Errorf("live conn after the drain bound: read err %v, want closed", err)
	}
	if err := d.waitUntil(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if e.pod("uid-a") == nil {
		t.Fatal("A went with B's drain")
	}

	// Enrolled again, then deleted: removal closes the live connection.
	e.node.SetConfig(testConfig(true))
	e.handOverAB()
	live = dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("x"))
	waitFor(t, "conn active in B", func() bool { return e.pod("uid-b").active.Load() > 0 })
	e.node.SetConfig(testConfig(false))
	if err := d.RemovePod("uid-b"); err != nil {
		t.Fatal(err)
	}
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Errorf("live conn after the pod was deleted: read err %v, want closed", err)
	}
}

// TestHandOverToSuccessor: a second node (an upgrade's next ztunnel) sets
// the same pods up beside the first one (its listeners join the first
// one's SO_REUSEPORT groups); on HandOver the first stops accepting and is
// not ready, leaves the SOCKHASH entries (the successor's now) alone, and
// keeps the connection it proxies until it ends; new connections reach
// the successor. Then the first releases the pods.
func TestHandOverToSuccessor(t *testing.T) {
	e := newEnv(t)
	d := newDrainingNode(e.node)
	e.handOverAB()
	e.orig.set(appB)
	live := dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("before"))
	waitFor(t, "conn active in B", func() bool { return e.pod("uid-b").active.Load() > 0 })

	next := &logBuf{}
	// Its own certificates, as another process has.
	succ := NewNode(NodeOptions{NodeName: "n1", Logger: next.logger(), Certs: newManager(t, e.ca, nil), OrigDst: e.orig, Listeners: e.lst,
		NodeAddrs: e.nodeAddrs, DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second, PodNet: hboneBeside{podnet.Netns{}}})
	succ.SetConfig(testConfig(true))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- succ.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("successor run: %v", err)
		}
		if t.Failed() {
			t.Logf("successor log:\n%s", next)
		}
	}()
	for _, p := range []struct {
		uid, name string
		ns        *os.File
		ips       []netip.Addr
	}{{"uid-a", "client", e.a, []netip.Addr{ipA, ip6A}}, {"uid-b", "server", e.b, []netip.Addr{ipB, ip6B}}} {
		fd, err := unix.Dup(int(p.ns.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if err := succ.AddPod(handoff.Pod{UID: p.uid, Name: p.name, Namespace: "agents", IPs: p.ips}, os.NewFile(uintptr(fd), p.name)); err != nil {
			t.Fatalf("the successor cannot set %s up beside the first node: %v", p.name, err)
		}
	}
	if err := succ.SnapshotDone([]string{"uid-a", "uid-b"}); err != nil {
		t.Fatal(err)
	}

	if err := d.HandOver(); err != nil {
		t.Fatal(err)
	}
	if err := e.node.Ready(); !errors.Is(err, errHandedOver) {
		t.Errorf("Ready after the hand-over = %v, want %v", err, errHandedOver)
	}
	if e.pod("uid-a") != nil || e.pod("uid-b") != nil {
		t.Error("pods still set up in the node that handed them over")
	}
	if got := len(e.lst.keys()); got != 8 {
		t.Errorf("%d SOCKHASH keys after the hand-over, want the successor's 8", got)
	}
	// A new connection: the successor's listener takes it.
	fresh := dialIn(t, e.a, "127.0.0.1:15001")
	if got, err := roundTrip(fresh, "after"); got != "echo:after" {
		t.Fatalf("new conn after the hand-over: %q, %v", got, err)
	}
	fresh.Close()
	waitFor(t, "the successor logged the new connection", func() bool {
		return strings.Contains(next.String(), `"direction":"outbound"`)
	})
	// The live one still runs through the first node, and ends there.
	if got, err := roundTrip(live, "+rest"); got != "echo:before+rest" {
		t.Fatalf("live conn across the hand-over: %q, %v", got, err)
	}
	if !d.waitDrained(5 * time.Second) {
		t.Fatal("handed-over pods not released after their last connection ended")
	}
	if !strings.Contains(e.logs.String(), "drained pod released") {
		t.Error("no drained pod released line")
	}
	if err := e.node.AddPod(handoff.Pod{UID: "uid-x"}, mustOpen(t, "/dev/null")); !errors.Is(err, errHandedOver) {
		t.Errorf("AddPod after the hand-over = %v, want %v", err, errHandedOver)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestShutdownLetsTheHandOverAckOut: a SIGTERM that comes while agentd
// hands the pods over (the kubelet may stop the old ztunnel as soon as the
// successor is ready) waits for the hand-off to end by itself, so agentd
// gets its acknowledgement; the shutdown used to cancel it mid-way, and
// agentd logged that the pods were not handed over.
func TestShutdownLetsTheHandOverAckOut(t *testing.T) {
	e := newEnv(t)
	d := newDrainingNode(e.node)
	inHandOver, release := make(chan struct{}), make(chan struct{})
	cancelled := make(chan bool, 1)
	handoffTask := startTask("agentd hand-off", discard, func(ctx context.Context) error {
		if err := d.HandOver(); err != nil {
			return err
		}
		close(inHandOver)
		select {
		case <-release: // the acknowledgement went out
			cancelled <- false
		case <-ctx.Done():
			cancelled <- true
		}
		return nil
	})
	<-inHandOver
	done := make(chan error, 1)
	go func() { done <- handOver(&options{drainTimeout: time.Second}, d, handoffTask, discard) }()
	select {
	case <-cancelled:
		t.Fatal("the shutdown cancelled the hand-off before it acknowledged the hand-over")
	case <-time.After(200 * time.Millisecond): // what a cancel would have taken
	}
	close(release)
	if <-cancelled {
		t.Error("the hand-off was cancelled")
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}
