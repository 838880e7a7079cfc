package lab

import (
	"context"
	"time"
)

// The backoff is kubelet's CrashLoopBackOff (10s doubling to 5min, reset
// after 10min up) scaled to a lab, where tests kill daemons on purpose and
// wait for them: the first restart comes after restartInitial, every crash
// of a process that ran for less than restartResetAfter doubles the delay
// up to restartMax, and one that stayed up that long starts over.
const (
	restartInitial    = 100 * time.Millisecond
	restartMax        = 5 * time.Second
	restartResetAfter = 10 * time.Second
)

// backoff is a restart delay policy.
type backoff struct {
	initial, max, resetAfter time.Duration
}

// defaultBackoff is the lab's policy (see restartInitial).
var defaultBackoff = backoff{initial: restartInitial, max: restartMax, resetAfter: restartResetAfter}

// next is the delay before restarting a process that exited after running
// for uptime; prev is the delay its own start waited (0: the lab started
// it, not a restart).
func (b backoff) next(prev, uptime time.Duration) time.Duration {
	if prev <= 0 || uptime >= b.resetAfter {
		return b.initial
	}
	return min(2*prev, b.max)
}

// watch waits for p, started as u's process, to exit and then decides:
// the lab asked for it (p is no longer current) or is closing, and that
// is all; or p crashed, and it restarts u after the backoff and waits
// until the new process serves (the new process has its own watcher).
func (s *supervisor) watch(u *unit, p *Process) {
	select {
	case <-p.Done():
	case <-s.ctx.Done():
		return
	}
	for {
		delay, dropped := s.exited(u, p)
		if dropped == nil || !s.sleep(delay, dropped) {
			return
		}
		np, spec, ok := s.restart(u, p, delay)
		if !ok {
			continue // the fork failed; p is still current: back off further
		}
		if np != nil {
			s.awaitReady(u, np, spec)
		}
		return
	}
}

// exited records that p ended and returns the delay before its restart
// and a channel closed if the lab drops the restart; a nil channel means
// no restart.
func (s *supervisor) exited(u *unit, p *Process) (time.Duration, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.broadcastLocked()
	u.exits++
	if s.closed || u.proc != p {
		return 0, nil // stopped by the lab, or replaced by a new start
	}
	now := time.Now()
	uptime := now.Sub(u.started)
	d := s.policy.next(u.delay, uptime)
	u.pending, u.exitedAt = make(chan struct{}), now
	s.log.Warn("exited without being asked to, restarting", "process", u.name, "pid", p.PID,
		"status", p.ExitStatus(), "uptime", uptime.Round(time.Millisecond), "restarts", u.restarts, "delay", d)
	return d, u.pending
}

// restart starts u again in place of old, unless the lab stopped or
// replaced old meanwhile or is closing (nil, true). false means the fork
// failed and old stays current, as if it had crashed at once.
func (s *supervisor) restart(u *unit, old *Process, delay time.Duration) (*Process, unitSpec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || u.proc != old {
		return nil, unitSpec{}, true
	}
	p, err := s.launchLocked(u, delay)
	if p == nil {
		u.started, u.delay = time.Now(), delay
		s.log.Error("restart failed", "process", u.name, "err", err)
		return nil, unitSpec{}, false
	}
	u.restarts++
	s.log.Warn("restarted", "process", u.name, "pid", p.PID, "restarts", u.restarts, "after", delay)
	if err != nil {
		s.log.Error("record restarted process", "process", u.name, "pid", p.PID, "err", err)
	}
	return p, u.spec, true
}

// awaitReady waits (bounded) until the restarted p serves and marks it so.
func (s *supervisor) awaitReady(u *unit, p *Process, spec unitSpec) {
	ctx, cancel := context.WithTimeout(s.ctx, s.readyTimeout)
	defer cancel()
	err := spec.ready(ctx, p)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && s.ctx.Err() == nil:
		s.log.Warn("restarted process not ready", "process", u.name, "pid", p.PID, "err", err)
	case err == nil && u.proc == p:
		u.readyProc = p
		s.broadcastLocked()
		s.log.Info("ready again", "process", u.name, "pid", p.PID, "down_for", time.Since(u.exitedAt).Round(time.Millisecond))
	}
}

// sleep waits d; false if the supervisor closed or the restart was
// dropped first.
func (s *supervisor) sleep(d time.Duration, dropped <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	case <-dropped:
		return false
	}
}
