package pipeline

import (
	"testing"
	"time"
)

// TestRetryBudget: retries within a fifth of the requests of the last ten
// seconds plus ten a second; what was spent more than ten seconds ago is
// forgotten.
func TestRetryBudget(t *testing.T) {
	var b retryBudget
	now := time.Unix(1000, 0)
	for range 1000 {
		b.request(now)
	}
	allowed := 0
	for range 1000 {
		if b.allow(now, budgetRatio, budgetMinPerSec) {
			allowed++
		}
	}
	if want := 1000/5 + budgetMinPerSec*budgetWindow; allowed != want {
		t.Errorf("%d retries allowed for 1000 requests, want %d", allowed, want)
	}
	later := now.Add(budgetWindow * time.Second)
	if !b.allow(later, budgetRatio, budgetMinPerSec) {
		t.Error("a window later the budget is still spent")
	}
	var idle retryBudget
	n := 0
	for idle.allow(now, budgetRatio, budgetMinPerSec) {
		n++
	}
	if n != budgetMinPerSec*budgetWindow {
		t.Errorf("without requests %d retries allowed, want the floor %d", n, budgetMinPerSec*budgetWindow)
	}
}
