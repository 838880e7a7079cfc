package pipeline

import (
	"sync"
	"time"
)

// Retry budget defaults (Linkerd's): retries may add a fifth to a
// Service's requests over the last ten seconds, and ten a second always.
const (
	budgetRatio     = 0.2
	budgetMinPerSec = 10
	budgetWindow    = 10 // seconds
)

// retryBudget bounds the retries of one Service to budgetRatio of its
// requests in the last budgetWindow seconds plus budgetMinPerSec a
// second, so that retries cannot multiply the load on a Service that is
// failing as a whole. Safe for concurrent use.
type retryBudget struct {
	mu    sync.Mutex
	slots [budgetWindow]struct {
		sec           int64
		reqs, retries int
	}
}

// slot is the counters of now's second, cleared when it is a new one.
func (b *retryBudget) slot(now time.Time) *struct {
	sec           int64
	reqs, retries int
} {
	sec := now.Unix()
	s := &b.slots[sec%budgetWindow]
	if s.sec != sec {
		s.sec, s.reqs, s.retries = sec, 0, 0
	}
	return s
}

// request counts a request's first try.
func (b *retryBudget) request(now time.Time) {
	b.mu.Lock()
	b.slot(now).reqs++
	b.mu.Unlock()
}

// allow takes one retry if the budget has room for it: ratio of the
// window's requests plus minPerSec a second.
func (b *retryBudget) allow(now time.Time, ratio float64, minPerSec int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.slot(now)
	var reqs, retries int
	for i := range b.slots {
		if s := &b.slots[i]; now.Unix()-s.sec < budgetWindow {
			reqs += s.reqs
			retries += s.retries
		}
	}
	if float64(retries+1) > ratio*float64(reqs)+float64(minPerSec*budgetWindow) {
		return false
	}
	cur.retries++
	return true
}

// budget is the retry budget of service (namespace/name).
func (pl *Pipeline) budget(service string) *retryBudget {
	if b, ok := pl.budgets.Load(service); ok {
		return b.(*retryBudget)
	}
	b, _ := pl.budgets.LoadOrStore(service, &retryBudget{})
	return b.(*retryBudget)
}
