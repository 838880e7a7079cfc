package kube

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
	"github.com/agentmesh/agentmesh/test/lab/traffic"
)

// Load of a chaos case: one client pod opening a new short echo
// connection every dialInterval, and loadStreams long streams.
const (
	dialInterval = 30 * time.Millisecond
	loadStreams  = 3
	loadWait     = 30 * time.Second // bound of every wait on the load
)

// startLoad starts the load from p to dst:8080 (a dialer and loadStreams
// streams); tag names its processes.
func startLoad(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, dst netip.Addr, tag string) *traffic.Load {
	t.Helper()
	to := netip.AddrPortFrom(dst, echoPort)
	ld, err := traffic.Start(ctx, l, p, to, slices.Repeat([]netip.AddrPort{to}, loadStreams),
		traffic.Options{Interval: dialInterval, Timeout: 2 * time.Second, Duration: 3 * time.Minute, Tag: "-" + tag})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Stop() })
	return ld
}

// waitUp waits until every stream has had an echo and n new connections
// worked.
func waitUp(t *testing.T, ld *traffic.Load, n int) {
	t.Helper()
	waitFor(t, "the streams are up", ld.StreamsUp)
	waitGood(t, ld, n, time.Time{})
}

// waitGood waits until n connections begun at or after since worked.
func waitGood(t *testing.T, ld *traffic.Load, n int, since time.Time) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d good new connections", n), func() (bool, string) { return ld.Good(n, since) })
}

// stopLoad stops the load and returns every connection attempt and every
// stream's final stats.
func stopLoad(t *testing.T, ld *traffic.Load) ([]meshlab.DialAttempt, []meshlab.StreamStats) {
	t.Helper()
	if err := ld.Stop(); err != nil {
		t.Error(err)
	}
	stats, err := ld.StreamStats()
	if err != nil {
		t.Fatal(err)
	}
	return ld.Attempts(), stats
}

// waitFor polls cond every 50ms for at most loadWait; state says where
// it stands, for the failure message.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(loadWait)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %s", loadWait, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
