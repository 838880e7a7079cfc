package identity

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// idleWake bounds how long Run sleeps when nothing is due.
const idleWake = time.Hour

// Run renews certificates at their renewal time until ctx is done, then
// waits for renewals in flight to stop and returns.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(idleWake)
	defer timer.Stop()
	for {
		next := m.startDue(ctx, &wg)
		timer.Reset(max(next.Sub(m.now()), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-timer.C:
		}
	}
}

// startDue starts a renewal for every entry that is due and returns the
// earliest renewal time of the others.
func (m *Manager) startDue(ctx context.Context, wg *sync.WaitGroup) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	next := now.Add(idleWake)
	for _, e := range m.entries {
		if e.cert == nil || e.cancel != nil {
			continue // Ensure still fetching, or renewal in flight
		}
		if e.renewAt.After(now) {
			next = minTime(next, e.renewAt)
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		e.cancel = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			m.renew(rctx, e)
		}()
	}
	return next
}

// renew fetches a new certificate for e; on failure the current one stays
// in use until it expires and the renewal is retried with backoff.
func (m *Manager) renew(ctx context.Context, e *entry) {
	cert, err := m.issue(ctx, e.id)
	m.mu.Lock()
	defer m.mu.Unlock()
	e.cancel = nil
	if m.entries[e.id] != e {
		return // forgotten meanwhile
	}
	defer m.poke()
	if err != nil {
		e.failures++
		e.renewAt = m.now().Add(backoff(e.failures))
		m.log.Warn("renew certificate failed", "id", e.id.String(), "failures", e.failures,
			"expires", e.cert.Leaf.NotAfter, "retry", e.renewAt, "err", err)
		return
	}
	e.cert, e.failures = cert, 0
	e.renewAt = renewTime(cert, rand.Float64())
	m.log.Debug("renewed certificate", "id", e.id.String(), "serial", cert.Leaf.SerialNumber.Text(16), "next", e.renewAt)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
