package transport

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// budgeted is a socket whose Close also gives back its fd budget unit. It
// adds nothing to reads and writes, so the relay splices it like the bare
// socket.
type budgeted struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *budgeted) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// BareTCP is the socket itself (relay.BareTCP), nil when it is no TCP
// socket (the fake network's).
func (c *budgeted) BareTCP() *net.TCPConn {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc
}

// CloseWrite half-closes the socket.
func (c *budgeted) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn is the socket's, for the relay's readiness wait.
func (c *budgeted) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
