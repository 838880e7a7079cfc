package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DialTCP connects to addr from inside the network namespace open at nsFD.
// Only the socket is made inside the namespace (on a locked OS thread, for
// the few microseconds socket(2) and control take); the connect then waits
// on Go's poller like any dial. Dialing with net.Dialer inside Do would
// instead hold a locked OS thread for the whole connect, so a burst of slow
// connects would grow the process by a thread per connect (and the Go
// runtime never gives threads back).
//
// control, if not nil, is called with the new socket before connect (to set
// SO_MARK, say). ctx bounds the connect; the connection outlives it.
func DialTCP(ctx context.Context, nsFD int, addr netip.AddrPort, control func(fd int) error) (*net.TCPConn, error) {
	fd, sa, err := socketIn(nsFD, addr, unix.SOCK_STREAM, unix.IPPROTO_TCP, control)
	if err != nil {
		return nil, dialError("tcp", addr, err)
	}
	c, err := connect(ctx, fd, sa)
	if err != nil {
		return nil, dialError("tcp", addr, err)
	}
	return c, nil
}

// socketIn makes a non-blocking socket of typ and proto for addr's family
// inside the network namespace open at nsFD (only socket(2) runs there)
// and calls control with it; it returns the socket and addr as a
// sockaddr. On error nothing is left open.
func socketIn(nsFD int, addr netip.AddrPort, typ, proto int, control func(fd int) error) (int, unix.Sockaddr, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()})
	if addr.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	}
	var fd int
	err := Do(nsFD, func() error {
		var err error
		fd, err = unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return -1, nil, err
	}
	if control != nil {
		if err := control(fd); err != nil {
			unix.Close(fd)
			return -1, nil, err
		}
	}
	return fd, sa, nil
}

// dialError reads like net.Dialer's: "dial tcp 10.0.0.1:80: connect:
// connection refused".
func dialError(network string, addr netip.AddrPort, err error) error {
	a := net.Addr(net.TCPAddrFromAddrPort(addr))
	if network == "udp" {
		a = net.UDPAddrFromAddrPort(addr)
	}
	return &net.OpError{Op: "dial", Net: network, Addr: a, Err: err}
}

// connect connects the non-blocking socket fd (which it owns from then on)
// and returns it as a *net.TCPConn.
func connect(ctx context.Context, fd int, sa unix.Sockaddr) (*net.TCPConn, error) {
	err := unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa)
	}
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: on the poller
	defer f.Close()
	if err == unix.EINPROGRESS {
		if err := waitConnected(ctx, f); err != nil {
			return nil, err
		}
	}
	// A connected socket's FileConn knows both addresses. It is a dup:
	// the deferred Close closes only f's descriptor.
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("file conn: %w", err)
	}
	return c.(*net.TCPConn), nil
}

// waitConnected waits until the connect in progress on f finished, as the
// net package does: writable, then SO_ERROR, then a peer name.
func waitConnected(ctx context.Context, f *os.File) error {
	if dl, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	var cerr error
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = os.NewSyscallError("getsockopt", err)
			return true
		case v != 0 && syscall.Errno(v) != unix.EINPROGRESS && syscall.Errno(v) != unix.EALREADY:
			cerr = os.NewSyscallError("connect", syscall.Errno(v))
			return true
		}
		_, err = unix.Getpeername(int(fd))
		return err == nil // ENOTCONN: not yet, wait for writability
	})
	if errors.Is(err, os.ErrDeadlineExceeded) && errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	return cerr
}
