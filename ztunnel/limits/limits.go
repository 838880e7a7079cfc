// Package limits keeps a burst larger than the node can carry from taking
// its tunnel down: every socket ztunnel opens or accepts for a proxied
// connection takes one unit of the fd budget (the process's open-file
// limit less a reserve for listeners, pipes and the rest), and every
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
	Conns   Counter // Max 0: no limit but the fd budget
	Refused Refusals
}

// Counter is a bounded count of things in use.
type Counter struct {
	Max  atomic.Int64 // 0: unbounded
	Used atomic.Int64
}

// Take takes one unit; false when none is left.
func (c *Counter) Take() bool {
	if n, m := c.Used.Add(1), c.Max.Load(); m > 0 && n > m {
		c.Used.Add(-1)
		return false
	}
	return true
}

// Give gives one unit back.
func (c *Counter) Give() { c.Used.Add(-1) }

// Reserve is how much of the open-file limit is kept for what is not a
// proxied connection's socket: a pod's listeners and netns, relay pipes,
// the config stream, logs.
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

// Refuse closes c with a reset, so its client learns at once.
func Refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
