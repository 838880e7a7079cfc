// Package relay moves the bytes of a proxied connection between its two
// sides: the one copy loop of every path (outbound, HBONE inbound,
// plaintext inbound, passthrough).
//
// A proxied connection is idle most of its life, and a node carries tens of
// thousands of them, so nothing is held per connection while it is idle:
//
//   - socket to socket (both *net.TCPConn): splice(2) through a pipe taken
//     from a small shared pool only once the source has data, and given back
//     as soon as it is drained. (io.Copy would splice too, but Go holds its
//     pipe, two fds, for as long as the copy waits, and returns pipes to a
//     pool that only the garbage collector's finalizers empty.)
//   - from a socket (anything with SyscallConn, e.g. to an HBONE stream): wait
//     until the socket is readable without a buffer (a one-byte MSG_PEEK),
//     then read into a pooled buffer and give it back after the write.
//   - from an HBONE stream, client or server side (a ReadyWaiter): the
//     same, waiting on the stream's receive queue; and while the queue is
//     empty the connection's reader writes arriving data to the
//     destination socket itself (a Pusher), so a request's bytes pass one
//     goroutine fewer.
//   - from anything else: reads into a 1 KiB buffer while the traffic is
//     sparse, larger pooled buffers while reads keep filling them (bulk),
//     and back.
//
// Buffers grow with the traffic: a read that fills its buffer moves the
// next read to the next size (1 KiB, 32 KiB, 256 KiB); a short read moves
// back to the smallest.
package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// closeWriter is a conn that can half-close (TCP, TLS, HBONE streams).
type closeWriter interface{ CloseWrite() error }

// Join copies both ways between down (the side that opened the connection)
// and up until both directions ended, half-closing each side when its peer
// finished sending. It returns the bytes sent by down (toward up) and
// received by down, and the first real error. Both conns are closed on
// return.
func Join(down, up net.Conn) (sent, received int64, err error) {
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		defer func() {
			// Not the caller's goroutine: recover here too.
			if r := recover(); r != nil {
				upErr = fmt.Errorf("panic copying upstream to client: %v", r)
				down.Close()
				up.Close()
			}
		}()
		received, upErr = pipe(down, up)
	})
	sent, err = pipe(up, down)
	wg.Wait()
	down.Close()
	up.Close()
	if err == nil {
		err = upErr
	}
	return sent, received, err
}

// pipe copies src to dst, then half-closes dst (or closes it when it cannot).
func pipe(dst, src net.Conn) (int64, error) {
	n, err := Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		src.Close()
		dst.Close()
		return n, err
	}
	return n, nil
}

// Copy copies src to dst until src ends (io.EOF is not an error) or either
// fails, holding no buffer while src is an idle socket (see the package
// comment). It returns the bytes written to dst.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	if s, d := tcpConn(src), tcpConn(dst); s != nil && d != nil && !noSplice(s) {
		if n, handled, err := spliceCopy(d, s); handled {
			return n, err
		}
	}
	c := copier{dst: dst, src: src}
	switch s := src.(type) {
	case ReadyWaiter:
		c.ready = streamWaiter{s}
	case rawConner:
		if rc, err := s.SyscallConn(); err == nil {
			c.ready = &waiter{rc: rc}
		}
	}
	if p, ok := src.(Pusher); ok && !noPush.Load() {
		if rc := pushTarget(dst); rc != nil {
			stop := p.PushTo(rc)
			n, err := c.run()
			return n + stop(), err
		}
	}
	return c.run()
}

// noPush turns pushing off (SetPush).
var noPush atomic.Bool

// SetPush says whether Copy lets a Pusher source write to its destination
// socket itself (default true); false, for measuring, makes every byte go
// through the copy loop.
func SetPush(on bool) { noPush.Store(!on) }

// spliceVeto, when set, says a socket must not be spliced from.
var spliceVeto atomic.Pointer[func(*net.TCPConn) bool]

// SetSpliceVeto makes Copy copy instead of splice from a socket for which
// veto returns true: agentd's loopback acceleration (--sockmap-accel)
// moves bytes into a socket's own queue, which splice(2) does not read
// (bpf.AccelProbe). nil removes the veto.
func SetSpliceVeto(veto func(src *net.TCPConn) bool) {
	if veto == nil {
		spliceVeto.Store(nil)
		return
	}
	spliceVeto.Store(&veto)
}

func noSplice(src *net.TCPConn) bool {
	v := spliceVeto.Load()
	return v != nil && (*v)(src)
}

// rawConner is a socket whose readiness Copy can wait for: *net.TCPConn,
// and wrappers that forward SyscallConn to their socket while adding
// meaning to Read and Write.
type rawConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// BareTCP is a wrapper of a TCP socket that adds nothing to Read and
// Write (only to Close, say), so Copy may splice its socket directly.
type BareTCP interface {
	BareTCP() *net.TCPConn
}

// tcpConn returns x as a bare TCP socket, nil for anything else (wrappers
// may add meaning to Read and Write that splicing would bypass).
func tcpConn(x any) *net.TCPConn {
	switch c := x.(type) {
	case *net.TCPConn:
		return c
	case BareTCP:
		return c.BareTCP()
	}
	return nil
}
