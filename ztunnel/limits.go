package ztunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// Refusal reasons, as in ztunnel_connections_rejected_total.
const (
	reasonFDBudget       = "fd_budget"       // the process is near its open-file limit
	reasonMaxConnections = "max_connections" // --max-connections reached
)

// errOverloaded is why a connection was refused by a limit.
var errOverloaded = errors.New("node tunnel at its connection limit")

// limits keep a burst larger than the node can carry from taking the tunnel
// down: every socket ztunnel opens or accepts for a proxied connection takes
// one unit of the fd budget (the process's open-file limit less a reserve
// for listeners, pipes and the rest), and every proxied connection (an
// outbound or plaintext connection, an HBONE stream) one slot of
// --max-connections. What does not fit is refused at once (a TCP reset, an
// HBONE 503), counted, and logged once per burst. Without the budget the
// process would hit EMFILE: accept loops then stall and every pod of the
// node waits, not only the excess.
type limits struct {
	fds     counter
	conns   counter // max 0: no limit but the fd budget
	refused refusals
}

// counter is a bounded count of things in use.
type counter struct {
	max  atomic.Int64 // 0: unbounded
	used atomic.Int64
}

// take takes one unit; false when none is left.
func (c *counter) take() bool {
	if n, m := c.used.Add(1), c.max.Load(); m > 0 && n > m {
		c.used.Add(-1)
		return false
	}
	return true
}

func (c *counter) give() { c.used.Add(-1) }

// fdReserve is how much of the open-file limit is kept for what is not a
// proxied connection's socket: a pod's listeners and netns, relay pipes,
// the config stream, logs.
func fdReserve(limit int64) int64 { return max(256, limit/20) }

// newLimits sizes the fd budget from the process's open-file limit.
func newLimits(maxConns int, log *slog.Logger) (*limits, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("read open-file limit: %w", err)
	}
	budget := int64(rl.Cur) - fdReserve(int64(rl.Cur))
	if budget < 64 {
		return nil, fmt.Errorf("open-file limit %d leaves no room for connections (raise RLIMIT_NOFILE)", rl.Cur)
	}
	l := &limits{}
	l.fds.max.Store(budget)
	l.conns.max.Store(int64(maxConns))
	l.refused.log = log
	return l, nil
}

// admitSocket takes an fd unit for a socket ztunnel accepted, and a
// connection slot when the socket is a proxied connection itself (not an
// HBONE connection, whose streams take slots). It returns the refusal
// reason, "" when admitted.
func (l *limits) admitSocket(kind podnet.Kind) string {
	if !l.fds.take() {
		return reasonFDBudget
	}
	if kind != podnet.HBONE && !l.conns.take() {
		l.fds.give()
		return reasonMaxConnections
	}
	return ""
}

// releaseSocket gives back what admitSocket took.
func (l *limits) releaseSocket(kind podnet.Kind) {
	if kind != podnet.HBONE {
		l.conns.give()
	}
	l.fds.give()
}

// refuse closes c with a reset, so its client learns at once.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// refusals logs the refusals of a burst once when they start and once when
// they stop (quiet for refusalQuiet), with counts, instead of a line per
// connection.
type refusals struct {
	log *slog.Logger

	mu     sync.Mutex
	start  time.Time        // of the burst; zero when none; guarded by mu
	last   time.Time        // latest refusal; guarded by mu
	counts map[string]int64 // by reason; guarded by mu
}

// refusalQuiet ends a burst of refusals.
const refusalQuiet = time.Second

func (r *refusals) add(reason, direction string, l *limits) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.start.IsZero() {
		r.start, r.counts = now, map[string]int64{}
		r.log.Warn("connection limit reached: refusing new connections until the load drops",
			"reason", reason, "direction", direction, "sockets", l.fds.used.Load(), "fd_budget", l.fds.max.Load(),
			"connections", l.conns.used.Load(), "max_connections", l.conns.max.Load())
	}
	r.last = now
	r.counts[reason]++
}

// flush ends a burst that has been quiet for refusalQuiet; the node's
// reconcile tick calls it.
func (r *refusals) flush(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() || now.Sub(r.last) < refusalQuiet {
		return
	}
	args := []any{"duration_ms", r.last.Sub(r.start).Milliseconds()}
	for reason, n := range r.counts {
		args = append(args, "refused_"+reason, n)
	}
	r.log.Warn("connection limit: burst over, accepting again", args...)
	r.start = time.Time{}
}

// trimMin is how far the carried connections must fall from their peak
// before the memory of a burst is handed back.
const trimMin = 500

// trimmer hands the memory of a burst back to the OS once it is over. Go
// frees the burst's heap only at its next GC cycles, and once the burst has
// ended nothing allocates enough to start one (the runtime forces one every
// two minutes); until then the process keeps its peak size.
type trimmer struct {
	peak int64 // most connections carried since the last trim
}

// due reports whether the memory should be trimmed now that n connections
// are carried: they fell by trimMin or more, to half the peak or less.
func (t *trimmer) due(n int64) bool {
	if n > t.peak {
		t.peak = n
		return false
	}
	if t.peak-n >= trimMin && n <= t.peak/2 {
		t.peak = n
		return true
	}
	return false
}

// trimMemory runs the two GC cycles that empty sync.Pools (a pool keeps
// its objects for one more) and returns the freed memory to the OS.
func trimMemory(log *slog.Logger) {
	start := time.Now()
	runtime.GC()
	debug.FreeOSMemory()
	log.Info("burst over: memory returned to the OS", "took_ms", time.Since(start).Milliseconds())
}
