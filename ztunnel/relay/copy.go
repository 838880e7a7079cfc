package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Buffer sizes, smallest first: a read that fills its buffer moves the
// next one up a size, a short read back to the first.
var sizes = [...]int{1 << 10, 32 << 10, 256 << 10}

var pools = [len(sizes)]sync.Pool{
	{New: func() any { b := make([]byte, sizes[0]); return &b }},
	{New: func() any { b := make([]byte, sizes[1]); return &b }},
	{New: func() any { b := make([]byte, sizes[2]); return &b }},
}

// copier is one direction of a connection.
type copier struct {
	dst   io.Writer
	src   io.Reader
	ready interface{ wait() error } // nil: reads wait with a buffer
	size  int                       // index into sizes of the next read
}

// ReadyWaiter is a source that can say when a Read would not block (an
// HBONE stream), so the relay lends it a buffer only then.
type ReadyWaiter interface {
	WaitReadable() error
}

// Pusher is a source whose own reader can write what arrives straight to
// the destination socket while nothing is queued ahead of it (an HBONE
// stream: the connection's reader goroutine writes, sparing the hand-off
// to the copy loop's goroutine). PushTo starts that; the stop function it
// returns ends it and returns the bytes written so. What the socket does
// not take at once the source queues for Read as before.
type Pusher interface {
	PushTo(dst syscall.RawConn) (stop func() int64)
}

// Explainer is a wrapper whose Read and Write add nothing but an
// explanation to their errors (authorize.Guard); Unguarded is the conn it
// wraps. A Pusher may write to its socket: a failed push is left to the
// copy loop's Write, which explains it.
type Explainer interface {
	Unguarded() net.Conn
}

// pushTarget is the socket a Pusher may write to for dst, nil if none.
func pushTarget(dst io.Writer) syscall.RawConn {
	if e, ok := dst.(Explainer); ok {
		dst = e.Unguarded()
	}
	tc := tcpConn(dst)
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// streamWaiter adapts a ReadyWaiter.
type streamWaiter struct{ r ReadyWaiter }

func (w streamWaiter) wait() error { return w.r.WaitReadable() }

func (c *copier) run() (int64, error) {
	var n int64
	for {
		// After a full read more is likely queued: read at once.
		if c.ready != nil && c.size == 0 {
			if err := c.ready.wait(); err != nil {
				// Let Read report it: a wrapper may know better why
				// its socket was closed (a policy revoked it).
				if _, rerr := c.src.Read(nil); rerr != nil {
					err = rerr
				}
				return n, err
			}
		}
		bp := pools[c.size].Get().(*[]byte)
		buf := *bp
		nr, rerr := c.src.Read(buf)
		if nr > 0 {
			nw, werr := c.dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				pools[c.size].Put(bp)
				return n, werr
			}
		}
		pools[c.size].Put(bp)
		switch {
		case errors.Is(rerr, io.EOF):
			return n, nil
		case rerr != nil:
			return n, rerr
		case nr == len(buf):
			c.size = min(c.size+1, len(sizes)-1)
		default:
			c.size = 0
		}
	}
}

// waiter waits until a socket has something to read (data, end of stream
// or an error) without taking a buffer.
type waiter struct {
	rc  syscall.RawConn
	one [1]byte
	err error                 // what the peek found wrong with the socket
	try func(fd uintptr) bool // w.peek, bound once
}

// wait returns once a read would not block. A socket error (a reset) is
// returned here: the peek has consumed it, a read would not see it again.
func (w *waiter) wait() error {
	if w.try == nil {
		w.try = w.peek
	}
	if err := w.rc.Read(w.try); err != nil {
		return err
	}
	if w.err != nil {
		return fmt.Errorf("read: %w", w.err)
	}
	return nil
}

// peek reports whether a read of fd would not block; false makes the
// runtime's poller wait for readability and call it again.
func (w *waiter) peek(fd uintptr) bool {
	for {
		_, _, err := unix.Recvfrom(int(fd), w.one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case nil:
		default:
			w.err = err
		}
		return true
	}
}
