package ztunnel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// registerLocked inserts the inbound sockets into the SOCKHASH for every pod
// ip so sk_lookup can steer traffic to them.
func (n *Node) registerLocked(p *pod) error {
	for _, l := range p.listeners {
		if l.Kind == podnet.Outbound {
			continue
		}
		sc, ok := l.Ln.(syscall.Conn)
		if !ok {
			return fmt.Errorf("register listener %s: not a socket", l.Ln.Addr())
		}
		for _, ip := range p.ips {
			if err := n.opts.Listeners.Put(ip, l.Port(), sc); err != nil {
				return fmt.Errorf("register listener %s:%d: %w", ip, l.Port(), err)
			}
			l.registered = append(l.registered, ip)
		}
	}
	return nil
}

// unregisterLocked undoes a partial setup: SOCKHASH entries, then sockets.
func (n *Node) unregisterLocked(p *pod) {
	for _, l := range p.listeners {
		for _, ip := range l.registered {
			n.opts.Listeners.Delete(ip, l.Port()) //nolint:errcheck // best effort on a failed setup
		}
		l.Ln.Close()
	}
	p.listeners = nil
}

// podIPs merges the addresses agentd saw with the config's, unmapped.
func podIPs(lists ...[]netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, l := range lists {
		for _, ip := range l {
			if ip = ip.Unmap(); ip.IsValid() && !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	return out
}

// startAcceptLoops serves every listener of p until it is closed, each
// accepted connection on its own goroutine owned by the pod (goConn).
func (n *Node) startAcceptLoops(p *pod) {
	for _, l := range p.listeners {
		p.wg.Go(func() {
			l.Serve(p.ctx.Done(), func(kind podnet.Kind, c net.Conn) { n.accepted(p, kind, c) },
				func(err error) { n.log.Error("accept failed", "pod", p.name(), "listener", l.Kind, "err", err) })
		})
	}
}

// accepted admits a connection within the limits and serves it, or
// refuses it at once.
func (n *Node) accepted(p *pod, kind podnet.Kind, c net.Conn) {
	if reason := n.limits.admitSocket(kind); reason != "" {
		n.refuseAccepted(p, kind, c, reason)
		return
	}
	serve := n.serveOutbound
	switch kind {
	case podnet.Plaintext:
		serve = n.servePlaintext
	case podnet.HBONE:
		serve = n.serveHBONE
	}
	n.goConn(p, kind, c, serve)
}

// refuseAccepted refuses a connection a limit does not admit. A refused
// outbound connection still consumes its original destination: the
// connect hook recorded one for it in the LRU orig_dst map, where it
// would otherwise stay until evicted, one per refused connection.
func (n *Node) refuseAccepted(p *pod, kind podnet.Kind, c net.Conn, reason string) {
	dir := dirInbound
	if kind == podnet.Outbound {
		dir = dirOutbound
		n.opts.OrigDst.Lookup(p.info.NetnsCookie, addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())) //nolint:errcheck // only consumed
	}
	n.metrics.rejected(dir, reason)
	n.limits.refused.add(reason, dir, n.limits)
	refuse(c)
}
