package hbone

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// pusher lets a connection's reader write a stream's data straight to the
// socket the relay copies the stream to (relay.Pusher), instead of queueing
// it for the relay's goroutine: one goroutine hand-off less per DATA frame,
// and no copy through the relay's buffer. It pushes only while nothing is
// queued ahead and the relay holds no data it read and has not yet
// written, so the bytes stay in order; whatever the socket does not take
// at once (it is full, or failed) is queued as before, and the relay's
// write finds the error. A pusher is guarded by its stream's mutex.
type pusher struct {
	rc       syscall.RawConn // nil: not pushing
	inFlight bool            // the stream's Read handed out data the relay may not have written yet
	pushed   int64           // bytes written to rc
	buf      []byte          // being written by try
	n        int             // of buf, written
	try      func(fd uintptr) bool
}

// start makes the stream push to rc.
func (p *pusher) start(rc syscall.RawConn) {
	p.rc = rc
	if p.try == nil {
		p.try = p.write
	}
}

// stop ends pushing and returns the bytes pushed.
func (p *pusher) stop() int64 {
	p.rc = nil
	return p.pushed
}

// ready reports whether data arriving on a stream with queued bytes
// queued may be pushed.
func (p *pusher) ready(queued int) bool {
	return p.rc != nil && !p.inFlight && queued == 0
}

// push writes what of b the socket takes now, without waiting, and
// returns how much that was.
func (p *pusher) push(b []byte) int {
	p.buf, p.n = b, 0
	if err := p.rc.Write(p.try); err != nil {
		p.n = 0 // closed: the relay's own write will say so
	}
	n := p.n
	p.buf, p.n = nil, 0
	p.pushed += int64(n)
	return n
}

// write is the raw write: it never asks the poller to wait (it returns
// true), so push never blocks the connection's reader.
func (p *pusher) write(fd uintptr) bool {
	for p.n < len(p.buf) {
		n, err := unix.Write(int(fd), p.buf[p.n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		p.n += n
	}
	return true
}
