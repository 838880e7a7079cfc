package authorize

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// Guard wraps the upstream of an admitted connection c: Close ends c (it
// leaves its pod's Live set) and then calls release, once; Read and Write
// errors after a revocation carry c's *Error, so the flow's record says why
// it ended.
func Guard(up net.Conn, c *Conn, release func()) net.Conn {
	return &guarded{Conn: up, c: c, release: release}
}

type guarded struct {
	net.Conn
	c       *Conn
	release func() // may be nil
	once    sync.Once
}

func (g *guarded) Close() error {
	first := false
	g.once.Do(func() {
		first = true
		g.c.End()
	})
	err := g.Conn.Close()
	if first && g.release != nil {
		g.release()
	}
	return err
}

// Inner is up without its guard's Close: closing it closes the socket but
// neither ends the admission nor gives the slot back, for an owner that
// hands the socket to something that may close it early (an HTTP
// transport's idle connection) and ends the admission itself later with
// up's own Close. up itself when it is not guarded.
func Inner(up net.Conn) net.Conn {
	if g, ok := up.(*guarded); ok {
		return inner{g}
	}
	return up
}

type inner struct{ *guarded }

func (i inner) Close() error { return i.guarded.Conn.Close() }

// CloseWrite half-closes the upstream (the client ended its side).
func (g *guarded) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn lets the relay wait for the upstream socket to be readable
// before it lends a buffer to Read (reads still go through Read).
func (g *guarded) SyscallConn() (syscall.RawConn, error) {
	sc, ok := g.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (g *guarded) Read(b []byte) (int, error) {
	n, err := g.Conn.Read(b)
	return n, g.explain(err)
}

func (g *guarded) Write(b []byte) (int, error) {
	n, err := g.Conn.Write(b)
	return n, g.explain(err)
}

func (g *guarded) explain(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	if perr := g.c.RevokedErr(); perr != nil {
		return perr
	}
	return err
}

// Unguarded is the upstream itself, for a caller that reports revocations
// on its own (pipeline.Local splices it).
func (g *guarded) Unguarded() net.Conn { return g.Conn }
