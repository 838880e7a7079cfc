// Package limits keeps a burst larger than the node can carry from taking
// its tunnel down: every socket ztunnel opens or accepts for a proxied
// connection takes one unit of the fd budget (the process's open-file
// limit less a reserve for pipes, the admin server and the rest), and so
// does each pod's own socket (its netns handle, listeners and DNS
// sockets: a node with more pods than the budget carries sets up what
// fits and reports the rest failed); every
// proxied connection (an outbound or plaintext connection, an HBONE
// stream) one slot of --max-connections. What does not fit is refused at
// once (a TCP reset, an HBONE 503), counted by the caller, and logged once
// per burst. Without the budget the process would hit EMFILE: accept loops
// then stall and every pod of the node waits, not only the excess.
package limits

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// Refusal reasons, as in ztunnel_connections_rejected_total.
const (
	ReasonFDBudget       = "fd_budget"       // the process is near its open-file limit
	ReasonMaxConnections = "max_connections" // --max-connections reached
)

// ErrOverloaded is why a connection was refused by a limit.
var ErrOverloaded = errors.New("node tunnel at its connection limit")

// Limits are the fd budget and the connection slots, and the log of their
// refusals. Safe for concurrent use.
type Limits struct {
	FDs     Counter
	Conns   Counter      // Max 0: no limit but the fd budget
	PodFDs  atomic.Int64 // of FDs.Used: the pods' own (netns handles, listeners, DNS sockets)
	Refused Refusals
}

// Counter is a bounded count of things in use.
type Counter struct {
	Max  atomic.Int64 // 0: unbounded
	Used atomic.Int64
}

// Take takes one unit; false when none is left.
func (c *Counter) Take() bool { return c.TakeN(1) }

// TakeN takes k units at once; false, with nothing taken, when fewer are
// left.
func (c *Counter) TakeN(k int64) bool {
	if n, m := c.Used.Add(k), c.Max.Load(); m > 0 && n > m {
		c.Used.Add(-k)
		return false
	}
	return true
}

// Give gives one unit back.
func (c *Counter) Give() { c.GiveN(1) }

// GiveN gives k units back.
func (c *Counter) GiveN(k int64) { c.Used.Add(-k) }

// Reserve is how much of the open-file limit is kept for what is neither a
// proxied connection's socket nor a pod's (netns handle, listeners, DNS
// sockets): relay pipes, the config stream, the admin server, logs.
func Reserve(limit int64) int64 { return max(256, limit/20) }

// New sizes the fd budget from the process's open-file limit. When it
// cannot be read the error says so and the Limits returned bound the
// connections by maxConns only.
func New(maxConns int, log *slog.Logger) (*Limits, error) {
	l := &Limits{}
	l.Refused.log = log
	l.Conns.Max.Store(int64(maxConns))
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return l, fmt.Errorf("read open-file limit: %w", err)
	}
	budget := int64(rl.Cur) - Reserve(int64(rl.Cur))
	if budget < 64 {
		return l, fmt.Errorf("open-file limit %d leaves no room for connections (raise RLIMIT_NOFILE)", rl.Cur)
	}
	l.FDs.Max.Store(budget)
	return l, nil
}

// AdmitSocket takes an fd unit for a socket ztunnel accepted, and a
// connection slot when the socket is a proxied connection itself (not an
// HBONE connection, whose streams take slots). It returns the refusal
// reason, "" when admitted.
func (l *Limits) AdmitSocket(kind podnet.Kind) string {
	if !l.FDs.Take() {
		return ReasonFDBudget
	}
	if kind != podnet.HBONE && !l.Conns.Take() {
		l.FDs.Give()
		return ReasonMaxConnections
	}
	return ""
}

// ReleaseSocket gives back what AdmitSocket took.
func (l *Limits) ReleaseSocket(kind podnet.Kind) {
	if kind != podnet.HBONE {
		l.Conns.Give()
	}
	l.FDs.Give()
}

// ErrPodFDs is why a pod was not set up: its sockets do not fit the fd
// budget.
var ErrPodFDs = errors.New("the node's open-file budget cannot carry this pod")

// AdmitPod takes k fd units for a pod's own sockets; the error says how
// full the budget is. Pods and proxied connections share the budget, so a
// node with more pods than its open-file limit carries refuses the excess
// pods (they stay failed, fail closed, and are retried) instead of running
// out of fds for everyone.
func (l *Limits) AdmitPod(k int) error {
	if !l.FDs.TakeN(int64(k)) {
		return fmt.Errorf("%w: %d sockets needed, %d of %d in use (%d by pods); raise RLIMIT_NOFILE",
			ErrPodFDs, k, l.FDs.Used.Load(), l.FDs.Max.Load(), l.PodFDs.Load())
	}
	l.PodFDs.Add(int64(k))
	return nil
}

// ReleasePod gives back what AdmitPod took.
func (l *Limits) ReleasePod(k int) {
	l.PodFDs.Add(-int64(k))
	l.FDs.GiveN(int64(k))
}

// Refuse closes c with a reset, so its client learns at once.
func Refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
