package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// Load of a chaos case: one client pod opening a new short echo
// connection every dialInterval, and loadStreams long streams.
const (
	dialInterval = 30 * time.Millisecond
	loadStreams  = 3
	loadWait     = 30 * time.Second // bound of every wait on the load
)

// load runs `meshlab app dialer` and `meshlab app stream`s in a pod until
// stop; the processes log to files the test reads while they run.
type load struct {
	dialer  *lab.Process
	streams []*lab.Process
}

// startLoad starts the load from p to dst:8080; tag names its processes.
func startLoad(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, dst netip.Addr, tag string) *load {
	t.Helper()
	to := netip.AddrPortFrom(dst, echoPort).String()
	ld := &load{}
	for k := range loadStreams {
		s, err := p.Start(ctx, fmt.Sprintf("stream-%s-%d", tag, k), l.Bin("meshlab"), "app", "stream",
			"--to", to, "--interval", "50ms", "--duration", "3m", "--progress")
		if err != nil {
			t.Fatal(err)
		}
		ld.streams = append(ld.streams, s)
	}
	d, err := p.Start(ctx, "dialer-"+tag, l.Bin("meshlab"), "app", "dialer",
		"--to", to, "--interval", dialInterval.String(), "--timeout", "2s", "--duration", "3m")
	if err != nil {
		t.Fatal(err)
	}
	ld.dialer = d
	return ld
}

// waitUp waits until every stream has had an echo and n new connections
// worked.
func (ld *load) waitUp(t *testing.T, n int) {
	t.Helper()
	waitFor(t, "the streams are up", func() (bool, string) {
		for _, s := range ld.streams {
			st, ok := lastStreamStats(s)
			if !ok || st.Echoed == 0 || st.Error != "" {
				return false, fmt.Sprintf("stream %s: %+v", s.Name, st)
			}
		}
		return true, ""
	})
	ld.waitGood(t, n, time.Time{})
}

// waitGood waits until n connections begun at or after since worked.
func (ld *load) waitGood(t *testing.T, n int, since time.Time) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d good new connections", n), func() (bool, string) {
		got, last := 0, meshlab.DialAttempt{}
		for _, a := range ld.attempts() {
			if !a.At.Before(since) {
				last = a
				if a.OK {
					got++
				}
			}
		}
		return got >= n, fmt.Sprintf("%d so far, last %+v", got, last)
	})
}

// stop stops the load and returns every connection attempt and every
// stream's final stats.
func (ld *load) stop(t *testing.T) ([]meshlab.DialAttempt, []meshlab.StreamStats) {
	t.Helper()
	var stats []meshlab.StreamStats
	for _, p := range append([]*lab.Process{ld.dialer}, ld.streams...) {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	}
	for _, s := range ld.streams {
		st, ok := lastStreamStats(s)
		if !ok {
			out, _ := s.Output()
			t.Fatalf("stream %s printed no stats: %s", s.Name, out)
		}
		stats = append(stats, st)
	}
	return ld.attempts(), stats
}

// attempts parses the dialer's attempt lines so far.
func (ld *load) attempts() []meshlab.DialAttempt {
	out, _ := ld.dialer.Output()
	var as []meshlab.DialAttempt
	for _, line := range bytes.Split(out, []byte("\n")) {
		var a meshlab.DialAttempt
		if json.Unmarshal(line, &a) == nil && !a.At.IsZero() {
			as = append(as, a)
		}
	}
	return as
}

// lastStreamStats is the last stats line a stream printed.
func lastStreamStats(p *lab.Process) (meshlab.StreamStats, bool) {
	out, _ := p.Output()
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var st meshlab.StreamStats
		if json.Unmarshal(lines[i], &st) == nil && st.To != "" {
			return st, true
		}
	}
	return meshlab.StreamStats{}, false
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
