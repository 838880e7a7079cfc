package ztunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"syscall"

	"github.com/agentmesh/agentmesh/internal/mesh"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// goConn runs serve for one accepted conn on a goroutine owned by the pod.
// The conn is closed when serve returns, when the pod goes away, and after a
// panic, which is logged and does not take the process down.
func (n *Node) goConn(p *pod, kind string, c net.Conn, serve func(context.Context, *pod, net.Conn)) {
	p.active.Add(1)
	p.wg.Go(func() {
		defer p.active.Add(-1)
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
// connect hooks let it pass; its source address is then the pod's.
func (n *Node) dial(ctx context.Context, p *pod, addr netip.AddrPort) (net.Conn, error) {
	c, err := netns.DialTCP(ctx, p.nsFD, addr, markSocket)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// markSocket sets SO_MARK = mesh.SocketMark on a socket before connect.
func markSocket(fd int) error {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mesh.SocketMark); err != nil {
		return fmt.Errorf("set SO_MARK: %w", err)
	}
	return nil
}
