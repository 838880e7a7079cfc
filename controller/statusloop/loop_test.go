package statusloop

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// TestLoop: no sync while not leading; becoming leader syncs; a Kick
// syncs; a failed sync is tried again without a Kick; Run ends with ctx.
func TestLoop(t *testing.T) {
	l := New()
	calls := make(chan int, 16)
	var mu sync.Mutex
	n, fail := 0, false
	syncFn := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		n++
		calls <- n
		if fail {
			fail = false
			return errors.New("boom")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, syncFn, slog.New(slog.DiscardHandler), "sync") }()
	l.Kick()
	select {
	case <-calls:
		t.Fatal("synced while not leading")
	case <-time.After(100 * time.Millisecond):
	}
	l.SetLeader(true)
	wait := func(what string) {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("no sync %s", what)
		}
	}
	wait("on becoming leader")
	mu.Lock()
	fail = true
	mu.Unlock()
	l.Kick()
	wait("after a kick")
	wait("after a failure (the retry)")
	cancel()
	<-done
}
