package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// acceptBackoff is the pause after a failed accept (EMFILE, say), so the
// loop does not spin; the listener stays.
const acceptBackoff = 100 * time.Millisecond

// startAcceptLoops serves every listener of p until it is closed, each
// accepted connection on its own goroutine owned by the pod (goConn),
// served as what it is (podnet.KindOf).
func (n *Node) startAcceptLoops(p *pod) {
	for _, l := range p.listeners {
		p.wg.Go(func() { n.acceptLoop(p, l) })
	}
}

func (n *Node) acceptLoop(p *pod, l *podListener) {
	for {
		c, err := l.Ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			n.log.Error("accept failed", "pod", p.name(), "listener", l.Kind, "err", err)
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(acceptBackoff):
			}
			continue
		}
		n.accepted(p, podnet.KindOf(c.LocalAddr()), c)
	}
}

// accepted admits a connection within the limits and hands it to the
// pipeline entry of its listener, or refuses it at once.
func (n *Node) accepted(p *pod, kind podnet.Kind, c net.Conn) {
	if reason := n.limits.AdmitSocket(kind); reason != "" {
		n.refuseAccepted(p, kind, c, reason)
		return
	}
	serve := func(ctx context.Context) { n.pipe.Outbound(ctx, &p.flow, c) }
	switch kind {
	case podnet.Plaintext:
		serve = func(ctx context.Context) { n.pipe.Plaintext(ctx, &p.flow, &p.live, c) }
	case podnet.HBONE:
		serve = func(ctx context.Context) { n.pipe.HBONE(ctx, &p.flow, &p.live, c) }
	}
	n.goConn(p, kind, c, serve)
}

// refuseAccepted refuses a connection a limit does not admit. A refused
// outbound connection still consumes its original destination (see
// classify.Forget).
func (n *Node) refuseAccepted(p *pod, kind podnet.Kind, c net.Conn, reason string) {
	dir := flow.Inbound
	if kind == podnet.Outbound {
		dir = flow.Outbound
		classify.Forget(n.opts.OrigDst, &p.flow, c)
	}
	n.rec.Rejected(dir, reason)
	n.limits.NoteRefusal(reason, string(dir))
	limits.Refuse(c)
}

// goConn runs serve for one accepted conn on a goroutine owned by the pod.
// The conn is closed when serve returns, when the pod goes away, and after a
// panic, which is logged and does not take the process down. What the
// accept loop took of the limits is given back after the close.
func (n *Node) goConn(p *pod, kind podnet.Kind, c net.Conn, serve func(context.Context)) {
	p.active.Add(1)
	p.wg.Go(func() {
		defer p.active.Add(-1)
		defer n.limits.ReleaseSocket(kind)
		ctx, cancel := context.WithCancel(p.ctx)
		defer cancel()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		defer func() {
			if r := recover(); r != nil {
				n.log.Error("panic in connection handler, connection closed",
					"pod", p.name(), "listener", kind, "src_addr", c.RemoteAddr().String(),
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				n.rec.Panicked()
			}
			c.Close()
		}()
		serve(ctx)
	})
}
