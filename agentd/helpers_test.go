package agentd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// eventLog is the one ordered record of what the fake datapath and the
// in-process ztunnel saw, so tests can assert their interleaving.
type eventLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// take returns and forgets what was logged so far.
func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// waitFor waits until the log holds exactly want, then clears it.
func (l *eventLog) waitFor(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = l.get(); slices.Equal(got, want) {
			l.take()
			return
		}
	}
	t.Fatalf("events:\n got %q\nwant %q", got, want)
}

// waitForAnyOrder is waitFor ignoring the order.
// It returns the events in the order they happened.
func (l *eventLog) waitForAnyOrder(t *testing.T, want ...string) []string {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = slices.Sorted(slices.Values(l.get())); slices.Equal(got, want) {
			return l.take()
		}
	}
	t.Fatalf("events (sorted):\n got %q\nwant %q", got, want)
	return nil
}

// requireBefore fails unless first happened before second in events.
func requireBefore(t *testing.T, events []string, first, second string) {
	t.Helper()
	i, j := slices.Index(events, first), slices.Index(events, second)
	if i < 0 || j < 0 || i > j {
		t.Fatalf("want %q before %q in %q", first, second, events)
	}
}

// fakeDatapath enrolls real namespaces into a map instead of the kernel.
type fakeDatapath struct {
	ev *eventLog

	mu       sync.Mutex
	enrolled map[uint64]bool  // guarded by mu
	fail     map[string]error // guarded by mu: Enroll(path) fails with this
	closed   bool             // guarded by mu
}

func newFakeDatapath(ev *eventLog, already ...uint64) *fakeDatapath {
	d := &fakeDatapath{ev: ev, enrolled: map[uint64]bool{}, fail: map[string]error{}}
	for _, c := range already {
		d.enrolled[c] = true
	}
	return d
}

func (d *fakeDatapath) Enroll(path string) (uint64, error) {
	d.mu.Lock()
	err := d.fail[path]
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	c, err := netns.Cookie(int(f.Fd()))
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.enrolled[c] = true
	d.ev.add("dp enroll %d", c)
	return c, nil
}

func (d *fakeDatapath) Unenroll(c uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.enrolled, c)
	d.ev.add("dp unenroll %d", c)
	return nil
}

func (d *fakeDatapath) Enrolled() ([]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sortedKeys(d.enrolled), nil
}

func (d *fakeDatapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *fakeDatapath) setFail(path string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, path)
	} else {
		d.fail[path] = err
	}
}

func (d *fakeDatapath) has() []uint64 {
	c, _ := d.Enrolled()
	return c
}

// ztunnel is an in-process handoff client that records into the event log
// and checks that every fd it gets is the namespace the cookie names.
type ztunnel struct {
	t  *testing.T
	ev *eventLog
}

func (z *ztunnel) AddPod(p handoff.Pod, f *os.File) error {
	defer f.Close()
	c, err := netns.Cookie(int(f.Fd()))
	if err != nil || c != p.NetnsCookie {
		z.t.Errorf("add %s: fd is netns %d (%v), message says %d", p.UID, c, err, p.NetnsCookie)
	}
	if p.Gate {
		z.ev.add("zt gated add %s %d", p.UID, p.NetnsCookie)
	} else {
		z.ev.add("zt add %s %d", p.UID, p.NetnsCookie)
	}
	return nil
}

func (z *ztunnel) RemovePod(uid string) error { z.ev.add("zt del %s", uid); return nil }

func (z *ztunnel) SnapshotDone(uids []string) error {
	z.ev.add("zt snapshot %s", strings.Join(uids, ","))
	return nil
}

func (z *ztunnel) HandOver() error { z.ev.add("zt handover"); return nil }

// startZtunnel connects an in-process ztunnel to path until the test ends.
func startZtunnel(t *testing.T, path string, ev *eventLog, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- handoff.Connect(ctx, path, &ztunnel{t: t, ev: ev}, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Connect: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startHandoff runs a real hand-off server until the test ends.
func startHandoff(t *testing.T, log *slog.Logger) (*handoff.Server, string) {
	path := filepath.Join(t.TempDir(), "agentd.sock")
	s, err := handoff.Listen(path, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, path
}

// newLog logs into a buffer printed when the test fails.
func newLog(t *testing.T) (*slog.Logger, *testutil.LogBuffer) { return testutil.NewLog(t) }

// requireRoot skips without root, or fails when CI=true.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	testutil.RequireRoot(t, why)
}

// testNetns is a throwaway network namespace.
type testNetns struct {
	path   string // /proc/PID/fd/N, valid until close
	cookie uint64
	close  func()
}

// newNetns creates a network namespace that lives until the test ends or
// its close is called.
func newNetns(t *testing.T) *testNetns {
	t.Helper()
	f := testutil.NewNetns(t)
	c, err := netns.Cookie(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	n := &testNetns{
		path:   fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()),
		cookie: c,
		close:  func() { once.Do(func() { f.Close() }) },
	}
	t.Cleanup(n.close)
	return n
}

var errInjected = errors.New("injected failure")
