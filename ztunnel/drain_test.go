package ztunnel

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/netns"
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
