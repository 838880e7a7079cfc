package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"
)

// The supervisor restarts what dies, as Kubernetes would: a node's agentd
// or ztunnel (a DaemonSet's pod) or a controller replica (a Deployment's)
// that exits without the lab having asked it to stop is started again
// after a backoff (supervise.go), logged, and recorded in the pids file so
// that Down still finds it.
//
// What the lab asked for never counts as a crash: Stop*, Kill* and
// Restart* forget the process before they signal it, and Close ends
// supervision before it stops anything.

// unitSpec says how to start a supervised process and when it serves.
type unitSpec struct {
	// start forks the process. It runs with the supervisor's lock held,
	// so it must not call back into the supervisor.
	start func() (*Process, error)
	// ready returns nil once p serves, or an error when p exits first or
	// ctx ends.
	ready func(ctx context.Context, p *Process) error
}

// unit is one supervised name ("n1-ztunnel", "controller-0"). Its fields
// are guarded by supervisor.mu.
type unit struct {
	name      string
	spec      unitSpec
	proc      *Process      // current process, possibly exited awaiting a restart; nil once the lab stopped it
	started   time.Time     // when proc started
	delay     time.Duration // backoff proc's start waited; 0 when the lab started it
	restarts  int           // restarts by the supervisor, over the lab's life
	readyProc *Process      // the last restarted process seen ready
	exits     int           // exits handled, asked for or not (a failed restart counts as one)
	exitedAt  time.Time     // when the last unasked exit was seen
	pending   chan struct{} // non-nil while a restart is scheduled; closed when the lab drops it
}

// dropPendingLocked drops a scheduled restart: the lab stopped or
// replaced the dead process.
func (u *unit) dropPendingLocked() {
	if u.pending != nil {
		close(u.pending)
		u.pending = nil
	}
}

// supervisor runs the lab's daemons and restarts the ones that die.
// Every goroutine it starts ends by close.
type supervisor struct {
	log          *slog.Logger
	policy       backoff
	readyTimeout time.Duration
	record       func(pid int, name string) error // adds a process to the pids file

	ctx    context.Context // ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // one watcher per started process

	mu      sync.Mutex // guards the fields below and every unit's
	units   map[string]*unit
	closed  bool
	active  int           // watchers running
	changed chan struct{} // closed and replaced whenever a unit changes
}

func newSupervisor(log *slog.Logger, policy backoff, readyTimeout time.Duration, record func(int, string) error) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{log: log, policy: policy, readyTimeout: readyTimeout, record: record,
		ctx: ctx, cancel: cancel, units: map[string]*unit{}, changed: make(chan struct{})}
}

// start starts name's process and supervises it; it does not wait until
// the process serves. A name whose process still runs is an error; one
// whose process died replaces it (a pending restart is then dropped).
func (s *supervisor) start(name string, spec unitSpec) (*Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("lab closed")
	}
	u := s.units[name]
	if u == nil {
		u = &unit{name: name}
		s.units[name] = u
	}
	if p := u.proc; p != nil && running(p) {
		return nil, fmt.Errorf("%s already running (pid %d)", name, p.PID)
	}
	u.spec = spec
	u.dropPendingLocked()
	p, err := s.launchLocked(u, 0)
	if p != nil {
		s.log.Info("started", "process", name, "pid", p.PID)
	}
	return p, err
}

// launchLocked forks u's process, makes it current, starts its watcher
// and records it. A nil process means it did not start.
func (s *supervisor) launchLocked(u *unit, delay time.Duration) (*Process, error) {
	p, err := u.spec.start()
	if err != nil {
		return nil, err
	}
	u.proc, u.started, u.delay, u.pending = p, time.Now(), delay, nil
	s.active++
	s.broadcastLocked()
	s.wg.Go(func() {
		defer s.watchEnded()
		s.watch(u, p)
	})
	return p, s.record(p.PID, u.name)
}

// stop forgets name's process, so its exit is not a crash, then stops it
// (SIGTERM, then SIGKILL). Stopping a stopped name is a no-op.
func (s *supervisor) stop(name string) error {
	p := s.take(name)
	if p == nil || !running(p) {
		return nil
	}
	s.log.Info("stopping", "process", name, "pid", p.PID)
	return p.Stop()
}

// kill is stop with SIGKILL at once.
func (s *supervisor) kill(name string) error {
	p := s.take(name)
	if p == nil {
		return nil
	}
	s.log.Info("killing", "process", name, "pid", p.PID)
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	<-p.Done()
	return nil
}

// take forgets and returns name's process (nil if none).
func (s *supervisor) take(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.units[name]
	if u == nil || u.proc == nil {
		return nil
	}
	p := u.proc
	u.proc = nil
	u.dropPendingLocked()
	s.broadcastLocked()
	return p
}

// stopAll stops every process still current, in name order.
func (s *supervisor) stopAll() []error {
	s.mu.Lock()
	var names []string
	for n, u := range s.units {
		if u.proc != nil {
			names = append(names, n)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		errs = append(errs, s.stop(n))
	}
	return errs
}

// close ends supervision: a restart that has not begun never will, and a
// restart being forked completes and leaves its process current, for the
// caller to stop. close waits for every watcher; processes keep running
// (the lab stops them in its own order). It is idempotent.
func (s *supervisor) close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	s.broadcastLocked()
	s.mu.Unlock()
	s.wg.Wait()
}

// current is name's current process (nil if none; it may have exited and
// await a restart).
func (s *supervisor) current(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.units[name]; u != nil {
		return u.proc
	}
	return nil
}

// pid is the pid of name's process if it runs, else 0.
func (s *supervisor) pid(name string) int {
	if p := s.current(name); p != nil && running(p) {
		return p.PID
	}
	return 0
}

// restarts is how often the supervisor restarted name.
func (s *supervisor) restarts(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.units[name]; u != nil {
		return u.restarts
	}
	return 0
}

// waitRestarted waits until name was restarted at least n times and its
// current process is such a restart, runs and is ready.
func (s *supervisor) waitRestarted(ctx context.Context, name string, n int) (*Process, error) {
	for {
		s.mu.Lock()
		u, ch, closed := s.units[name], s.changed, s.closed
		var state string
		if u != nil {
			if p := u.proc; u.restarts >= n && p != nil && u.readyProc == p && running(p) {
				s.mu.Unlock()
				return p, nil
			}
			state = fmt.Sprintf("restarts %d, exits %d, restart pending %v", u.restarts, u.exits, u.pending != nil)
		}
		s.mu.Unlock()
		if closed {
			return nil, errors.New("lab closed")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for restart %d of %s: %w (%s)", n, name, ctx.Err(), state)
		}
	}
}

// watchEnded counts a watcher out.
func (s *supervisor) watchEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	s.broadcastLocked()
}

// broadcastLocked wakes every waiter on s.changed.
func (s *supervisor) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// running reports whether p has not exited.
func running(p *Process) bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}
