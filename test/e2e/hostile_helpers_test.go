package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// legitLoad is the traffic an attack must not disturb: a dialer making a
// new short echo connection every 50ms and long streams, from one pod,
// until stopped.
type legitLoad struct {
	dialer  *lab.Process
	streams []*lab.Process
}

// startLegitLoad starts a dialer from p to dsts[0] and one stream to each
// of dsts.
func startLegitLoad(t *testing.T, l *lab.Lab, p *lab.Pod, dsts ...netip.AddrPort) *legitLoad {
	t.Helper()
	ctx := context.Background()
	ld := &legitLoad{}
	t.Cleanup(func() { ld.stopAll() })
	for k, dst := range dsts {
		s, err := p.Start(ctx, fmt.Sprintf("stream-%d", k), l.Bin("meshlab"), "app", "stream",
			"--to", dst.String(), "--interval", "50ms", "--duration", "10m", "--progress")
		if err != nil {
			t.Fatal(err)
		}
		ld.streams = append(ld.streams, s)
	}
	d, err := p.Start(ctx, "dialer", l.Bin("meshlab"), "app", "dialer",
		"--to", dsts[0].String(), "--interval", "50ms", "--timeout", "5s", "--duration", "10m")
	if err != nil {
		t.Fatal(err)
	}
	ld.dialer = d
	return ld
}

// waitUp waits until every stream has had an echo and ten new
// connections worked.
func (ld *legitLoad) waitUp(t *testing.T) {
	t.Helper()
	waitCond(t, 30*time.Second, "the legitimate load is up", func() (bool, string) {
		for _, s := range ld.streams {
			if st, ok := lastStreamStats(s); !ok || st.Echoed == 0 || st.Error != "" {
				return false, fmt.Sprintf("stream %s: %+v", s.Name, st)
			}
		}
		ok := 0
		for _, a := range ld.attempts() {
			if a.OK {
				ok++
			}
		}
		return ok >= 10, fmt.Sprintf("%d good connections", ok)
	})
}

// stop stops the load and returns every connection attempt and every
// stream's final stats.
func (ld *legitLoad) stop(t *testing.T) ([]meshlab.DialAttempt, []meshlab.StreamStats) {
	t.Helper()
	if err := ld.stopAll(); err != nil {
		t.Error(err)
	}
	var stats []meshlab.StreamStats
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

func (ld *legitLoad) stopAll() error {
	var err error
	for _, p := range append([]*lab.Process{ld.dialer}, ld.streams...) {
		if p != nil {
			if serr := p.Stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}
	return err
}

// attempts parses the dialer's attempt lines so far.
func (ld *legitLoad) attempts() []meshlab.DialAttempt {
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

// waitCond polls cond every 100ms for at most bound; state says where it
// stands, for the failure message. It returns how long it waited.
func waitCond(t *testing.T, bound time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > bound {
			t.Fatalf("waited %s for %s: %s", bound, what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statsWatch samples a node's ztunnel every interval until stopped and
// keeps the highest value of each figure.
type statsWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex    // guards the fields below
	peak    lab.ProcStats // each field the highest seen
	samples int
	errs    int
}

// watchZtunnel starts sampling node i's ztunnel.
func watchZtunnel(l *lab.Lab, i int, every time.Duration) *statsWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &statsWatch{cancel: cancel}
	w.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			st, err := l.ZtunnelStats(ctx, i)
			w.add(st, err)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return w
}

func (w *statsWatch) add(st lab.ProcStats, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs++
		return
	}
	w.samples++
	p := &w.peak
	p.RSS, p.Peak, p.FDs, p.Goros = max(p.RSS, st.RSS), max(p.Peak, st.Peak), max(p.FDs, st.FDs), max(p.Goros, st.Goros)
	p.Heap, p.Stacks = max(p.Heap, st.Heap), max(p.Stacks, st.Stacks)
}

// stop ends the sampling and returns the peaks, the number of samples and
// of failed reads.
func (w *statsWatch) stop() (lab.ProcStats, int, int) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.samples, w.errs
}

// steadyStats is the median of five samples of node i's ztunnel, 200ms
// apart: one connection of the load in flight does not move it.
func steadyStats(t *testing.T, l *lab.Lab, i int) lab.ProcStats {
	t.Helper()
	var all []lab.ProcStats
	for range 5 {
		st, err := l.ZtunnelStats(context.Background(), i)
		if err != nil {
			t.Fatalf("ztunnel n%d stats: %v", i, err)
		}
		all = append(all, st)
		time.Sleep(200 * time.Millisecond)
	}
	med := func(f func(lab.ProcStats) int64) int64 {
		v := make([]int64, len(all))
		for k, st := range all {
			v[k] = f(st)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return lab.ProcStats{
		RSS:    med(func(s lab.ProcStats) int64 { return s.RSS }),
		Peak:   all[len(all)-1].Peak,
		FDs:    int(med(func(s lab.ProcStats) int64 { return int64(s.FDs) })),
		Goros:  int(med(func(s lab.ProcStats) int64 { return int64(s.Goros) })),
		Heap:   med(func(s lab.ProcStats) int64 { return s.Heap }),
		Stacks: med(func(s lab.ProcStats) int64 { return s.Stacks }),
	}
}
