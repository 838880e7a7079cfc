package e2e

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
	"github.com/agentmesh/agentmesh/test/lab/traffic"
)

// startLegitLoad starts the traffic an attack must not disturb: a dialer
// from p to dsts[0] every 50ms and one stream to each of dsts, stopped when
// the test ends.
func startLegitLoad(t *testing.T, l *lab.Lab, p *lab.Pod, dsts ...netip.AddrPort) *traffic.Load {
	t.Helper()
	ld, err := traffic.Start(context.Background(), l, p, dsts[0], dsts, traffic.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Stop() })
	return ld
}

// waitLegitUp waits until every stream has had an echo and ten new
// connections worked.
func waitLegitUp(t *testing.T, ld *traffic.Load) {
	t.Helper()
	waitCond(t, 30*time.Second, "the legitimate load is up", func() (bool, string) {
		if ok, state := ld.StreamsUp(); !ok {
			return false, state
		}
		return ld.Good(10, time.Time{})
	})
}

// stopLegit stops the load and returns every connection attempt and every
// stream's final stats.
func stopLegit(t *testing.T, ld *traffic.Load) ([]meshlab.DialAttempt, []meshlab.StreamStats) {
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
