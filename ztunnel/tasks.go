package ztunnel

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// task is one long-running goroutine of Run with its own cancel, so Run can
// stop them one by one in a fixed order.
type task struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

// startTask runs fn on a goroutine until its context is cancelled.
func startTask(name string, log *slog.Logger, fn func(ctx context.Context) error) *task {
	ctx, cancel := context.WithCancel(context.Background())
	t := &task{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		if err := fn(ctx); err != nil {
			log.Error("task ended with error", "task", name, "err", err)
		}
	}()
	return t
}

// stop cancels the task and waits for it until deadline.
func (t *task) stop(deadline time.Time) error {
	t.cancel()
	select {
	case <-t.done:
		return nil
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("%s did not stop in time", t.name)
	}
}

// wait waits up to d for the task to end by itself and reports whether it
// did.
func (t *task) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.done:
		return true
	case <-timer.C:
		return false
	}
}

// waitTimeout waits for wg for at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
