package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run without root: the supervised processes are plain
// `sleep`s, killed with SIGKILL as a crash would end them.

func TestBackoffNext(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: 800 * time.Millisecond, resetAfter: 10 * time.Second}
	cases := []struct {
		name         string
		prev, uptime time.Duration
		want         time.Duration
	}{
		{"first crash after the lab's own start", 0, time.Second, 100 * time.Millisecond},
		{"first crash, even a quick one", 0, 0, 100 * time.Millisecond},
		{"crash again soon after a restart doubles", 100 * time.Millisecond, 2 * time.Second, 200 * time.Millisecond},
		{"and doubles again", 400 * time.Millisecond, 0, 800 * time.Millisecond},
		{"up to the cap", 800 * time.Millisecond, time.Second, 800 * time.Millisecond},
		{"stayed up long enough: start over", 800 * time.Millisecond, 10 * time.Second, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := b.next(tc.prev, tc.uptime); got != tc.want {
			t.Errorf("%s: next(%s, %s) = %s, want %s", tc.name, tc.prev, tc.uptime, got, tc.want)
		}
	}
}

func TestSupervisorRestartsWhatDies(t *testing.T) {
	h := newSupHarness(t, backoff{initial: 10 * time.Millisecond, max: 40 * time.Millisecond, resetAfter: time.Hour})
	gate := make(chan struct{})
	spec := h.f.spec(func(ctx context.Context, p *Process) error {
		select {
		case <-gate:
			return nil
		case <-p.Done():
			return errors.New("exited")
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	first := h.start("n1-ztunnel", spec)
	killPID(t, first.PID)
	h.waitState("a second process", func() bool { return h.f.count() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if p, err := h.s.waitRestarted(ctx, "n1-ztunnel", 1); err == nil {
		t.Errorf("waitRestarted returned %d before the restarted process was ready", p.PID)
	}
	cancel()
	close(gate)
	second := h.waitRestarted("n1-ztunnel", 1)
	if second.PID == first.PID || h.s.pid("n1-ztunnel") != second.PID || h.s.restarts("n1-ztunnel") != 1 {
		t.Errorf("after one crash: pid %d (first %d, current %d), restarts %d", second.PID, first.PID,
			h.s.pid("n1-ztunnel"), h.s.restarts("n1-ztunnel"))
	}
	h.wantLine(fmt.Sprintf(`process=n1-ztunnel pid=%d status="signal: killed"`, first.PID), "restarts=0 delay=10ms")
	h.wantLine(fmt.Sprintf("msg=restarted process=n1-ztunnel pid=%d restarts=1 after=10ms", second.PID))
	if got := h.recorded(); !slices.Equal(got, []string{fmt.Sprint(first.PID, " n1-ztunnel"), fmt.Sprint(second.PID, " n1-ztunnel")}) {
		t.Errorf("pids recorded: %q", got)
	}
	// Quick crashes double the delay up to the cap.
	p := second
	for n, delay := range []string{"20ms", "40ms", "40ms"} {
		killed := p.PID
		killPID(t, killed)
		p = h.waitRestarted("n1-ztunnel", n+2)
		h.wantLine(fmt.Sprintf("pid=%d", killed), fmt.Sprintf("restarts=%d delay=%s", n+1, delay))
	}
}

func TestSupervisorLeavesWhatTheLabStopped(t *testing.T) {
	h := newSupHarness(t, backoff{initial: time.Millisecond, max: time.Millisecond, resetAfter: time.Hour})
	ready := func(context.Context, *Process) error { return nil }
	for _, stop := range []func(string) error{h.s.stop, h.s.kill} {
		p := h.start("controller-0", h.f.spec(ready))
		if err := stop("controller-0"); err != nil {
			t.Fatal(err)
		}
		h.waitState("the watcher is done", func() bool { return h.s.active == 0 })
		if running(p) || h.s.current("controller-0") != nil || h.s.restarts("controller-0") != 0 {
			t.Errorf("after stop: running %v, current %v, restarts %d", running(p), h.s.current("controller-0"), h.s.restarts("controller-0"))
		}
	}
	if n := h.f.count(); n != 2 {
		t.Errorf("%d processes started, want the 2 the test started", n)
	}
	if strings.Contains(h.log.String(), "restarting") {
		t.Errorf("a stop by the lab was taken for a crash:\n%s", h.log.String())
	}
}

func TestSupervisorStopDropsPendingRestart(t *testing.T) {
	h := newSupHarness(t, backoff{initial: time.Hour, max: time.Hour, resetAfter: time.Hour})
	p := h.start("n2-agentd", h.f.spec(func(context.Context, *Process) error { return nil }))
	killPID(t, p.PID)
	h.waitState("a restart is pending", func() bool { return h.s.units["n2-agentd"].pending != nil })
	if err := h.s.stop("n2-agentd"); err != nil {
		t.Fatal(err)
	}
	h.waitState("the watcher is done", func() bool { return h.s.active == 0 })
	if n, r := h.f.count(), h.s.restarts("n2-agentd"); n != 1 || r != 0 {
		t.Errorf("stopped during the backoff: %d processes started, %d restarts; want 1, 0", n, r)
	}
	// A start by the lab replaces a dead process and drops its restart.
	p = h.start("n2-agentd", h.f.spec(func(context.Context, *Process) error { return nil }))
	killPID(t, p.PID)
	h.waitState("a restart is pending", func() bool { return h.s.units["n2-agentd"].pending != nil })
	again := h.start("n2-agentd", h.f.spec(func(context.Context, *Process) error { return nil }))
	h.waitState("the dead process's watcher is done", func() bool { return h.s.active == 1 })
	if h.s.pid("n2-agentd") != again.PID || h.s.restarts("n2-agentd") != 0 || h.f.count() != 3 {
		t.Errorf("start over a dead process: pid %d, want %d; %d restarts, %d processes", h.s.pid("n2-agentd"), again.PID,
			h.s.restarts("n2-agentd"), h.f.count())
	}
	if _, err := h.s.start("n2-agentd", h.f.spec(nil)); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("start of a running name: %v", err)
	}
}

func TestSupervisorRetriesFailedFork(t *testing.T) {
	h := newSupHarness(t, backoff{initial: 5 * time.Millisecond, max: time.Second, resetAfter: time.Hour})
	p := h.start("n1-agentd", h.f.spec(func(context.Context, *Process) error { return nil }))
	h.f.setFails(2)
	killPID(t, p.PID)
	h.waitRestarted("n1-agentd", 1)
	h.wantLog("delay=5ms", `msg="restart failed" process=n1-agentd`, "delay=10ms", `msg="restart failed"`, "delay=20ms", "restarts=1 after=20ms")
}

// TestSupervisorCloseDuringRestart: close begins while a restart is being
// forked; the forked process stays current, so stopAll ends it, and
// nothing starts after close.
func TestSupervisorCloseDuringRestart(t *testing.T) {
	h := newSupHarness(t, backoff{initial: time.Millisecond, max: time.Millisecond, resetAfter: time.Hour})
	inFork := make(chan struct{})
	h.f.setHook(func(n int) {
		if n == 2 {
			close(inFork)
			<-h.s.ctx.Done() // close has begun
		}
	})
	p := h.start("n1-ztunnel", h.f.spec(func(context.Context, *Process) error { return nil }))
	killPID(t, p.PID)
	<-inFork
	h.s.close()
	if h.s.active != 0 {
		t.Errorf("%d watchers still running after close", h.s.active)
	}
	if n := h.f.count(); n != 2 {
		t.Fatalf("%d processes started, want 2 (the restart in flight completes)", n)
	}
	if cur := h.s.current("n1-ztunnel"); cur == nil || !running(cur) {
		t.Fatalf("the process forked during close is not current: %v", cur)
	}
	if errs := errors.Join(h.s.stopAll()...); errs != nil {
		t.Fatal(errs)
	}
	for _, q := range h.f.all() {
		if running(q) {
			t.Errorf("pid %d still runs after close and stopAll", q.PID)
		}
	}
	if _, err := h.s.start("n1-ztunnel", h.f.spec(nil)); err == nil {
		t.Error("start after close succeeded")
	}
}

func TestSupervisorCloseDuringBackoff(t *testing.T) {
	h := newSupHarness(t, backoff{initial: time.Hour, max: time.Hour, resetAfter: time.Hour})
	p := h.start("controller-1", h.f.spec(func(context.Context, *Process) error { return nil }))
	killPID(t, p.PID)
	h.waitState("a restart is pending", func() bool { return h.s.units["controller-1"].pending != nil })
	h.s.close() // does not wait out the hour
	if n := h.f.count(); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.s.waitRestarted(ctx, "controller-1", 1); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("waitRestarted after close: %v", err)
	}
}

// supHarness is a supervisor of sleepers whose log and pids file the test reads.
type supHarness struct {
	t   *testing.T
	s   *supervisor
	f   *sleepers
	log syncBuffer

	mu   sync.Mutex
	pids []string // "PID NAME", as recorded
}

func newSupHarness(t *testing.T, policy backoff) *supHarness {
	h := &supHarness{t: t, f: &sleepers{}}
	log := slog.New(slog.NewTextHandler(&h.log, nil))
	h.s = newSupervisor(log, policy, 5*time.Second, func(pid int, name string) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.pids = append(h.pids, fmt.Sprint(pid, " ", name))
		return nil
	})
	t.Cleanup(func() {
		h.s.close()
		h.s.stopAll()
		for _, p := range h.f.all() {
			_ = p.cmd.Process.Kill()
			<-p.Done()
		}
		if t.Failed() {
			t.Logf("supervisor log:\n%s", h.log.String())
		}
	})
	return h
}

func (h *supHarness) start(name string, spec unitSpec) *Process {
	h.t.Helper()
	p, err := h.s.start(name, spec)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *supHarness) waitRestarted(name string, n int) *Process {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := h.s.waitRestarted(ctx, name, n)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// waitState waits (at most 10s) until cond, called with the supervisor's
// lock held, holds.
func (h *supHarness) waitState(what string, cond func() bool) {
	h.t.Helper()
	waitSupervisor(h.t, h.s, what, cond)
}

// waitSupervisor waits (at most 10s) until cond, called with s's lock
// held, holds.
func waitSupervisor(t *testing.T, s *supervisor, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// wantLine checks that one line of the log holds every part.
func (h *supHarness) wantLine(parts ...string) {
	h.t.Helper()
	for _, line := range strings.Split(h.log.String(), "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return
		}
	}
	h.t.Errorf("no log line holds all of %q:\n%s", parts, h.log.String())
}

// wantLog checks that the log holds every part, in that order.
func (h *supHarness) wantLog(parts ...string) {
	h.t.Helper()
	rest := h.log.String()
	for _, part := range parts {
		_, after, ok := strings.Cut(rest, part)
		if !ok {
			h.t.Errorf("log lacks %q (after the parts before it):\n%s", part, h.log.String())
			return
		}
		rest = after
	}
}

func (h *supHarness) recorded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.pids)
}

// sleepers starts `sleep 300` processes and remembers them.
type sleepers struct {
	mu    sync.Mutex
	procs []*Process
	tries int
	fails int       // the next fails starts fail
	hook  func(int) // called in every start with its number (from 1), before forking
}

func (f *sleepers) spec(ready func(context.Context, *Process) error) unitSpec {
	return unitSpec{start: f.start, ready: ready}
}

func (f *sleepers) start() (*Process, error) {
	f.mu.Lock()
	f.tries++
	n, hook, fail := f.tries, f.hook, f.fails > 0
	if fail {
		f.fails--
	}
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if fail {
		return nil, errors.New("fork failed (test)")
	}
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := reap(cmd, "sleep", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = append(f.procs, p)
	return p, nil
}

func (f *sleepers) setFails(n int) { f.mu.Lock(); f.fails = n; f.mu.Unlock() }

func (f *sleepers) setHook(h func(int)) { f.mu.Lock(); f.hook = h; f.mu.Unlock() }

func (f *sleepers) count() int { return len(f.all()) }

func (f *sleepers) all() []*Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.procs)
}

// killPID sends SIGKILL to pid (never to 0 or -1: a group or everyone).
func killPID(t *testing.T, pid int) {
	t.Helper()
	if pid <= 1 {
		t.Fatalf("no process to kill (pid %d)", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
