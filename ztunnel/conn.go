package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// goConn runs serve for one accepted conn on a goroutine owned by the pod.
// The conn is closed when serve returns, when the pod goes away, and after a
// panic, which is logged and does not take the process down. What the
// accept loop took of the limits is given back after the close.
func (n *Node) goConn(p *pod, kind podnet.Kind, c net.Conn, serve func(context.Context, *pod, net.Conn)) {
	p.active.Add(1)
	p.wg.Go(func() {
		defer p.active.Add(-1)
		defer n.limits.releaseSocket(kind)
		ctx, cancel := context.WithCancel(p.ctx)
		defer cancel()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		defer func() {
			if r := recover(); r != nil {
				n.log.Error("panic in connection handler, connection closed",
					"pod", p.name(), "listener", kind, "src_addr", c.RemoteAddr().String(),
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				n.metrics.panics.Inc()
			}
			c.Close()
		}()
		serve(ctx, p, c)
	})
}

// dial opens a TCP connection from inside the pod netns, marked so the eBPF
// connect hooks let it pass; its source address is then the pod's. The
// socket takes a unit of the fd budget until it is closed; without one
// left the dial fails with errOverloaded (counted as a rejection in dir).
func (n *Node) dial(ctx context.Context, dir string, p *pod, addr netip.AddrPort) (net.Conn, error) {
	if !n.limits.fds.take() {
		n.metrics.rejected(dir, reasonFDBudget)
		n.limits.refused.add(reasonFDBudget, dir, n.limits)
		return nil, fmt.Errorf("dial %s: %w (%s)", addr, errOverloaded, reasonFDBudget)
	}
	c, err := p.net.Dial(ctx, addr)
	if err != nil {
		n.limits.fds.give()
		return nil, err
	}
	return &podConn{Conn: c, release: n.limits.fds.give}, nil
}

// podConn is a socket ztunnel dialed in a pod netns whose Close also gives
// back its fd budget unit. It adds nothing to reads and writes, so the
// relay splices it like the bare socket.
type podConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *podConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// BareTCP is the socket itself (relay.BareTCP), nil when it is no TCP
// socket (the fake network's).
func (c *podConn) BareTCP() *net.TCPConn {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc
}

// CloseWrite half-closes the socket.
func (c *podConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn is the socket's, for the relay's readiness wait.
func (c *podConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
