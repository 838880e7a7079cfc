package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Splice sizes.
const (
	// pipeSize is the capacity asked of each pipe: what one splice moves.
	pipeSize = 256 << 10
	// maxIdlePipes bounds the pipes kept for reuse; more are closed when
	// given back, so a burst leaves no fds behind.
	maxIdlePipes = 16
)

// kpipe is a kernel pipe used to splice between two sockets. It holds
// bytes only between a drain and its pump.
type kpipe struct {
	r, w int
	data int // bytes in the pipe
}

// pipePool keeps a few empty pipes for reuse.
type pipePool struct {
	mu   sync.Mutex
	free []*kpipe // guarded by mu
	max  int
}

var pipes = &pipePool{max: maxIdlePipes}

func (p *pipePool) get() (*kpipe, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		kp := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return kp, nil
	}
	p.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("relay: pipe: %w", err)
	}
	// Best effort: a smaller pipe only means more splice calls.
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize) //nolint:errcheck
	return &kpipe{r: fds[0], w: fds[1]}, nil
}

// put keeps an empty pipe for reuse, or closes it.
func (p *pipePool) put(kp *kpipe) {
	if kp.data == 0 {
		p.mu.Lock()
		if len(p.free) < p.max {
			p.free = append(p.free, kp)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	unix.Close(kp.r)
	unix.Close(kp.w)
}

// idle counts the pipes kept for reuse.
func (p *pipePool) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// spliceCopy moves src to dst in the kernel until src ends. handled is
// false when the kernel cannot splice these sockets and nothing was moved,
// so the caller copies instead.
func spliceCopy(dst, src *net.TCPConn) (n int64, handled bool, err error) {
	s := splicer{}
	s.src, err = src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	s.dst, err = dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	s.drainFn, s.pumpFn = s.drain, s.pump
	for first := true; ; first = false {
		s.err = nil
		rerr := s.src.Read(s.drainFn)
		if rerr == nil && s.err != nil {
			rerr = fmt.Errorf("relay splice read: %w", s.err)
		}
		if s.p == nil || s.p.data == 0 {
			if s.p != nil {
				pipes.put(s.p)
				s.p = nil
			}
			if first && errors.Is(rerr, unix.EINVAL) {
				return 0, false, nil // not spliceable
			}
			return n, true, rerr // rerr nil: end of stream
		}
		werr := s.dst.Write(s.pumpFn)
		if werr == nil && s.err != nil {
			werr = fmt.Errorf("relay splice write: %w", s.err)
		}
		n += s.moved
		s.moved = 0
		pipes.put(s.p) // closed unless drained
		s.p = nil
		if werr != nil {
			return n, true, werr
		}
		if rerr != nil {
			return n, true, rerr
		}
	}
}

// splicer is one splice direction's state for the RawConn callbacks,
// bound once so a wake-up allocates nothing.
type splicer struct {
	src, dst        syscall.RawConn
	p               *kpipe
	moved           int64
	err             error
	drainFn, pumpFn func(uintptr) bool
}

// drain moves what src has into a pipe taken only now: false (wait for
// readability) gives the pipe back first.
func (s *splicer) drain(fd uintptr) bool {
	if s.p == nil {
		s.p, s.err = pipes.get()
		if s.err != nil {
			return true
		}
	}
	for {
		m, err := unix.Splice(int(fd), nil, s.p.w, nil, pipeSize, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			pipes.put(s.p)
			s.p = nil
			return false
		case nil:
			s.p.data += int(m)
		default:
			s.err = err
		}
		return true
	}
}

// pump moves the pipe's bytes to dst; false waits for dst to take more.
func (s *splicer) pump(fd uintptr) bool {
	for s.p.data > 0 {
		m, err := unix.Splice(s.p.r, nil, int(fd), nil, s.p.data, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case nil:
			s.p.data -= int(m)
			s.moved += m
		default:
			s.err = err
			return true
		}
	}
	return true
}
