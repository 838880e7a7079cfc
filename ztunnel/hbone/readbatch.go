package hbone

import (
	"io"
	"net"
	"os"
	"syscall"
)

// readBatcher gives crypto/tls, which asks the socket for little more than
// one record (16 KiB) at a time, everything the socket has, up to maxBatch,
// with one read(2). The buffer is taken from batchPool only once the
// socket is readable and given back as soon as it is drained, so a
// connection waiting for data holds none. Only crypto/tls reads, under its
// own lock, so readBatcher needs none.
type readBatcher struct {
	rc   syscall.RawConn // nil: reads go straight to the conn
	fill func(fd uintptr) bool
	buf  *[]byte // unread bytes are (*buf)[off:]; nil when drained
	off  int
	n    int   // result of the last read(2)
	err  error // of the last read(2)
}

func newReadBatcher(raw net.Conn) readBatcher {
	var r readBatcher
	if sc, ok := raw.(syscall.Conn); ok {
		r.rc, _ = sc.SyscallConn()
	}
	return r
}

func (r *readBatcher) read(c net.Conn, p []byte) (int, error) {
	if r.buf == nil {
		if r.rc == nil || len(p) >= maxBatch {
			return c.Read(p)
		}
		if err := r.wait(c); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*r.buf)[r.off:])
	r.off += n
	if r.off == len(*r.buf) {
		*r.buf = (*r.buf)[:0]
		batchPool.Put(r.buf)
		r.buf, r.off = nil, 0
	}
	return n, nil
}

// wait waits until the socket is readable and reads what it has into buf.
func (r *readBatcher) wait(c net.Conn) error {
	if r.fill == nil {
		r.fill = r.readFD // made once: a method value allocates
	}
	err := r.rc.Read(r.fill)
	if err == nil && r.err != nil {
		err = os.NewSyscallError("read", r.err)
	}
	if err == nil && r.buf == nil {
		return io.EOF
	}
	if err != nil {
		return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return nil
}

// readFD is the RawConn.Read callback: false asks to wait for readability.
func (r *readBatcher) readFD(fd uintptr) bool {
	bp := batchPool.Get().(*[]byte)
	buf := (*bp)[:maxBatch]
	for {
		r.n, r.err = syscall.Read(int(fd), buf)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		batchPool.Put(bp)
		return false
	}
	if r.n > 0 {
		*bp = buf[:r.n]
		r.buf, r.off = bp, 0
		return true
	}
	batchPool.Put(bp)
	return true
}
