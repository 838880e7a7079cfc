package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// maxErrorBody bounds how much of a non-200 answer's body is read.
const maxErrorBody = 512

// openStream sends the CONNECT on pc (a stream reserved on it) and waits
// for the answer or ctx. The stream outlives ctx: it ends with Close or
// with its connection.
func (c *Client) openStream(ctx context.Context, pc *pconn, t *Target) (*clientStream, error) {
	auth := t.Authority.String()
	s, err := pc.cc.open(ctx, auth, requestHeader(t.Header))
	if err != nil {
		return nil, fmt.Errorf("hbone connect %s via %s: %w", auth, t.HBONEAddr, err)
	}
	s.local, s.remote = pc.tc.LocalAddr(), net.TCPAddrFromAddrPort(t.Authority)
	s.release = func() { c.release(pc) }
	return s, nil
}

// ErrDeadline is returned by the deadline setters of a stream, but for a
// server stream's read deadline.
var ErrDeadline = fmt.Errorf("hbone stream deadlines: %w", errors.ErrUnsupported)

// zeroDeadline accepts clearing a deadline, the only thing a stream can do.
func zeroDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return ErrDeadline
}
