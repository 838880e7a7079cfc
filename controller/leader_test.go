package controller

import (
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// TestLeaderHandover: two replicas on one cluster elect one leader; when
// it stops, the other takes over, visible in /status and the leader gauge.
func TestLeaderHandover(t *testing.T) {
	client := fake.NewClientset(nsObj(testNS, false))
	flags := func(id string) []string {
		return []string{"--leader-elect", "--id", id, "--lease-duration", "1s", "--renew-deadline", "800ms", "--retry-period", "100ms"}
	}
	a := newHarness(t, client, flags("a")...)
	a.start()
	waitLeader(t, a, "a")
	b := newHarness(t, client, flags("b")...)
	b.start()
	waitStatus(t, b, "a follower of a", func(d statusDoc) bool { return !d.Leader && d.LeaderID == "a" })
	if b.rootPEM() == nil {
		t.Fatal("no root")
	}
	if got := b.metric("agentmesh_controller_leader", ""); got != "0" {
		t.Errorf("follower's leader gauge = %q, want 0", got)
	}
	a.stop() // releases the lease
	waitLeader(t, b, "b")
	if got := b.metric("agentmesh_controller_leader", ""); got != "1" {
		t.Errorf("new leader's gauge = %q, want 1", got)
	}
}

func waitLeader(t *testing.T, h *harness, id string) {
	t.Helper()
	waitStatus(t, h, id+" leading", func(d statusDoc) bool { return d.Leader && d.LeaderID == id })
}

func waitStatus(t *testing.T, h *harness, what string, ok func(statusDoc) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ok(h.status()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("status never showed %s within 10s: %+v", what, h.status())
}
