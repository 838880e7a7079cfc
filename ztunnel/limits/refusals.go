package limits

import (
	"log/slog"
	"sync"
	"time"
)

// Refusals logs the refusals of a burst once when they start and once when
// they stop (quiet for RefusalQuiet), with counts, instead of a line per
// connection.
type Refusals struct {
	log *slog.Logger

	mu     sync.Mutex
	start  time.Time        // of the burst; zero when none; guarded by mu
	last   time.Time        // latest refusal; guarded by mu
	counts map[string]int64 // by reason; guarded by mu
}

// RefusalQuiet ends a burst of refusals.
const RefusalQuiet = time.Second

// NoteRefusal notes a refusal for reason of a connection going direction.
func (l *Limits) NoteRefusal(reason, direction string) {
	r := &l.Refused
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.start.IsZero() {
		r.start, r.counts = now, map[string]int64{}
		r.log.Warn("connection limit reached: refusing new connections until the load drops",
			"reason", reason, "direction", direction, "sockets", l.FDs.Used.Load(), "fd_budget", l.FDs.Max.Load(),
			"connections", l.Conns.Used.Load(), "max_connections", l.Conns.Max.Load())
	}
	r.last = now
	r.counts[reason]++
}

// Flush ends a burst that has been quiet for RefusalQuiet; the node's
// periodic tick calls it.
func (r *Refusals) Flush(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() || now.Sub(r.last) < RefusalQuiet {
		return
	}
	args := []any{"duration_ms", r.last.Sub(r.start).Milliseconds()}
	for reason, n := range r.counts {
		args = append(args, "refused_"+reason, n)
	}
	r.log.Warn("connection limit: burst over, accepting again", args...)
	r.start = time.Time{}
}
