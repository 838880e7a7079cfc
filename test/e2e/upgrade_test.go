package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/traffic"
)

// upgradeStreams is how long each round's streams run: the old ztunnel
// drains the streams it carries until they end, well within its
// --drain-timeout (20s). The dialers run on until well after the upgrade.
const upgradeStreams = 8 * time.Second

// TestZtunnelUpgradeUnderLoad replaces each node's ztunnel the way the
// chart's rolling update does (lab.UpgradeZtunnel: the next ztunnel beside
// the old one, the pods handed over once it set them up, the old one
// drained) while pods open a new connection every 20ms and hold streams:
// outbound from the upgraded node's pods and inbound to them, cross-node
// over HBONE and same-node, IPv4 and IPv6. No new connection fails, no
// stream breaks, and the old ztunnel exits once its streams ended.
func TestZtunnelUpgradeUnderLoad(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	c := addPod(t, l, "c", 1, true)
	for _, pair := range [][2]*lab.Pod{{a, b}, {b, a}, {c, a}, {a, c}} {
		send(t, l, pair[0], addr(pair[1].IPv4(), echoPort), "warm-up")
	}
	for round, node := range []int{1, 2, 1} {
		t.Run(fmt.Sprintf("round%d-n%d", round+1, node), func(t *testing.T) {
			upgradeRound(t, l, node, fmt.Sprintf("-r%d", round+1), []upgradeFlow{
				{a, addr(b.IPv4(), echoPort), []netip.AddrPort{addr(b.IPv4(), echoPort), addr(b.IPv6(), echoPort)}},
				{b, addr(a.IPv6(), echoPort), []netip.AddrPort{addr(a.IPv4(), echoPort)}},
				{c, addr(a.IPv4(), echoPort), []netip.AddrPort{addr(a.IPv6(), echoPort)}},
			})
		})
	}
}

// upgradeFlow is one pod's load: a dialer to dial and streams.
type upgradeFlow struct {
	from    *lab.Pod
	dial    netip.AddrPort
	streams []netip.AddrPort
}

// upgradeRound starts the flows (their processes' names end in tag),
// upgrades node's ztunnel while they run, and checks what they saw.
func upgradeRound(t *testing.T, l *lab.Lab, node int, tag string, flows []upgradeFlow) {
	ctx := context.Background()
	var loads []*traffic.Load
	defer func() {
		for _, ld := range loads {
			ld.Stop() //nolint:errcheck // after a failure; outputs stay readable
		}
	}()
	for k, f := range flows {
		ld, err := traffic.Start(ctx, l, f.from, f.dial, f.streams,
			traffic.Options{Interval: 20 * time.Millisecond, Timeout: 5 * time.Second, Duration: 5 * time.Minute,
				StreamDuration: upgradeStreams, Tag: fmt.Sprintf("%s-%d", tag, k)})
		if err != nil {
			t.Fatal(err)
		}
		loads = append(loads, ld)
	}
	since := time.Now()
	for _, ld := range loads {
		waitCond(t, 30*time.Second, "the load is up", func() (bool, string) {
			if ok, st := ld.StreamsUp(); !ok {
				return false, st
			}
			return ld.Good(3, since)
		})
	}
	oldPID := l.PID(lab.ZtunnelName(node))
	start := time.Now()
	p, drained, err := l.UpgradeZtunnel(ctx, node)
	if err != nil {
		t.Fatalf("upgrade n%d's ztunnel: %v", node, err)
	}
	t.Logf("TIMING n%d ztunnel upgrade: pid %d -> %d; new one ready after %s, old one exited %s after SIGTERM",
		node, oldPID, p.PID, time.Since(start)-drained, drained)
	after := time.Now()
	// New connections go on after the upgrade; then the load stops.
	for _, ld := range loads {
		waitCond(t, 30*time.Second, "new connections after the upgrade", func() (bool, string) { return ld.Good(25, after) })
		for _, s := range ld.Streams {
			s.Wait() //nolint:errcheck // the stats say how it ended
		}
		if err := ld.Stop(); err != nil {
			t.Error(err)
		}
	}
	attempts, failed, afterUpgrade, broken := 0, 0, 0, 0
	for k, ld := range loads {
		for _, at := range ld.Attempts() {
			attempts++
			if !at.OK {
				failed++
				t.Errorf("new connection from %s to %s failed at %s (upgrade began %s): %s", flows[k].from.Name, flows[k].dial,
					at.At.Format("15:04:05.000"), start.Format("15:04:05.000"), at.Error)
			}
			if at.At.After(after) {
				afterUpgrade++
			}
		}
		stats, err := ld.StreamStats()
		if err != nil {
			t.Error(err)
		}
		for _, st := range stats {
			if st.Error != "" || st.BrokenAt != 0 || st.Echoed != st.Sent || st.Sent == 0 {
				broken++
				t.Errorf("stream from %s to %s broke: %+v", flows[k].from.Name, st.To, st)
			}
		}
	}
	streams := 0
	for _, f := range flows {
		streams += len(f.streams)
	}
	t.Logf("UPGRADE n%d under load: %d new connections, %d failed (%d begun after the old ztunnel exited); %d streams, %d broken",
		node, attempts, failed, afterUpgrade, streams, broken)
	log, _ := os.ReadFile(l.DaemonLog(node, "ztunnel"))
	if !strings.Contains(string(log), "pods handed over to a successor ztunnel") {
		t.Errorf("n%d: the old ztunnel did not log the hand-over", node)
	}
}
