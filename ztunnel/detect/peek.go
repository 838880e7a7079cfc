package detect

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is what Look reads from: a socket whose read deadline it may set
// and whose descriptor it may peek at.
type Conn interface {
	SetReadDeadline(t time.Time) error
	SyscallConn() (syscall.RawConn, error)
}

// MoreWait bounds the wait for the rest of a first message once its
// beginning arrived without deciding (a request line split over segments).
const MoreWait = 50 * time.Millisecond

// Look waits until c's first bytes decide what they are (Sniff), c's
// client ends, or timeout passes, without consuming anything: the bytes
// stay in the socket for whoever reads next. Once the first bytes are
// there, the rest of an undecided beginning gets at most MoreWait. buf
// (at least MaxSniff bytes, reusable) holds what was seen. It returns the
// App and how it was decided: BySniff, ByTimeout (the client sent nothing
// in time), ByInconclusive (the client sent a beginning and stopped or
// ended, or MaxSniff was not enough). An error means the socket failed
// (it is then Opaque).
func Look(c Conn, buf []byte, timeout time.Duration) (App, By, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Opaque, ByNotSniffed, fmt.Errorf("detect: %w", err)
	}
	deadline := time.Now().Add(timeout)
	if err := c.SetReadDeadline(deadline); err != nil {
		return Opaque, ByNotSniffed, fmt.Errorf("detect: %w", err)
	}
	p := peeker{buf: buf[:min(len(buf), MaxSniff)]}
	p.try = p.peek
	defer func() {
		c.SetReadDeadline(time.Time{})
		if p.lowat > 1 {
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1) })
		}
	}()
	for {
		prev := p.n
		if err := rc.Read(p.try); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if p.n > 0 {
					return Opaque, ByInconclusive, nil // the rest did not follow
				}
				return Opaque, ByTimeout, nil
			}
			return Opaque, ByNotSniffed, fmt.Errorf("detect: %w", err)
		}
		if p.err != nil {
			return Opaque, ByNotSniffed, fmt.Errorf("detect: peek: %w", p.err)
		}
		app, done := Sniff(p.buf[:p.n])
		switch {
		case done:
			return app, BySniff, nil
		case p.n == prev || p.n == len(p.buf):
			// The client ended with nothing new, or the buffer is full.
			return app, ByInconclusive, nil
		}
		if prev == 0 {
			// The rest of a first message that was split follows at
			// once; a client that sent a prefix and waits for an answer
			// is not kept waiting for the whole timeout.
			if more := time.Now().Add(MoreWait); more.Before(deadline) {
				if err := c.SetReadDeadline(more); err != nil {
					return Opaque, ByNotSniffed, fmt.Errorf("detect: %w", err)
				}
			}
		}
		// Wake only when more than what was seen is there.
		p.lowat = p.n + 1
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, p.lowat)
		})
		if err = cmp.Or(err, serr); err != nil {
			return Opaque, ByNotSniffed, fmt.Errorf("detect: set SO_RCVLOWAT: %w", err)
		}
	}
}

// peeker is the raw peek: the bytes queued on the socket, left there.
type peeker struct {
	buf   []byte
	n     int
	lowat int
	err   error
	try   func(fd uintptr) bool
}

// peek returns false (wait for readability) while there is nothing new.
func (p *peeker) peek(fd uintptr) bool {
	for {
		n, _, err := unix.Recvfrom(int(fd), p.buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case nil:
			if n > 0 && n == p.n {
				// Nothing new (a non-blocking peek returns what is there
				// even below SO_RCVLOWAT): done if the client ended its
				// side, else wait for more.
				return p.ended(fd)
			}
			p.n = n
		default:
			p.err = err
		}
		return true
	}
}

// ended reports whether the peer ended its side (or the socket failed).
func (p *peeker) ended(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

var _ Conn = (*net.TCPConn)(nil)
