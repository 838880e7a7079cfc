// Package statusloop runs a status writer's syncs (AgentPolicy,
// TrafficPolicy, route status): one at a time, after every Kick while this
// replica leads, a failed sync tried again with backoff; and writes a
// custom resource's status condition safely (ApplyCondition).
package statusloop

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Backoff bounds of a failed sync's retries.
const (
	BaseBackoff = 500 * time.Millisecond
	MaxBackoff  = 30 * time.Second
)

// Loop is the leadership flag and wake-up of one writer. Kick and
// SetLeader never block.
type Loop struct {
	kick  chan struct{} // cap 1
	leads atomic.Bool   // this replica may write now
}

// New returns a Loop that does not lead yet.
func New() *Loop { return &Loop{kick: make(chan struct{}, 1)} }

// Kick asks for a sync.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// SetLeader says whether this replica leads: only the leader syncs.
// Becoming leader starts a sync, which catches up with what the last
// leader left.
func (l *Loop) SetLeader(leads bool) {
	l.leads.Store(leads)
	if leads {
		l.Kick()
	}
}

// Leads reports whether this replica leads.
func (l *Loop) Leads() bool { return l.leads.Load() }

// Run calls sync after every Kick while leader, until ctx is done; a
// failed sync is logged (msg, at Warn) and tried again after a backoff
// that doubles up to MaxBackoff, and is BaseBackoff again after a success.
func (l *Loop) Run(ctx context.Context, sync func(context.Context) error, log *slog.Logger, msg string) {
	backoff := BaseBackoff
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-retry.C:
		}
		if !l.leads.Load() {
			continue
		}
		if err := sync(ctx); err != nil && ctx.Err() == nil {
			log.Warn(msg, "err", err, "retry", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, MaxBackoff)
			continue
		}
		backoff = BaseBackoff
	}
}
