package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// Listener kinds.
const (
	kindOutbound  = "outbound"
	kindPlaintext = "inbound-plaintext"
	kindHBONE     = "hbone"
)

// listenSpec is one socket ztunnel opens in every pod netns.
type listenSpec struct {
	kind     string
	network  string
	addr     string
	optional bool // tolerated to fail (no IPv6 in the pod)
}

// podListenSpecs lists the sockets per pod. The eBPF connect hooks send IPv4
// to 127.0.0.1:15001 and IPv6 to [::1]:15001; sk_lookup steers inbound
// traffic to the dual-stack 15006 and 15008 sockets.
var podListenSpecs = []listenSpec{
	{kindOutbound, "tcp4", fmt.Sprintf("127.0.0.1:%d", mesh.OutboundPort), false},
	{kindOutbound, "tcp6", fmt.Sprintf("[::1]:%d", mesh.OutboundPort), true},
	{kindPlaintext, "tcp", fmt.Sprintf(":%d", mesh.InboundPlaintextPort), false},
	{kindHBONE, "tcp", fmt.Sprintf(":%d", mesh.HBONEPort), false},
}

// openListeners creates the pod's listening sockets inside its netns.
func openListeners(nsFD int) ([]*podListener, error) {
	var out []*podListener
	// Plain TCP: the SOCKHASH and sk_lookup take no MPTCP sockets, and Go
	// listens with MPTCP by default.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	err := netns.Do(nsFD, func() error {
		for _, s := range podListenSpecs {
			ln, err := lc.Listen(context.Background(), s.network, s.addr)
			if err != nil && s.optional {
				continue
			}
			if err != nil {
				return fmt.Errorf("listen %s in pod netns: %w", s.addr, err)
			}
			out = append(out, &podListener{kind: s.kind, ln: ln.(*net.TCPListener)})
		}
		return nil
	})
	if err != nil {
		for _, l := range out {
			l.ln.Close()
		}
		return nil, err
	}
	return out, nil
}

// port returns the mesh port of l.
func (l *podListener) port() uint16 {
	return uint16(l.ln.Addr().(*net.TCPAddr).Port)
}

// registerLocked inserts the inbound sockets into the SOCKHASH for every pod
// ip so sk_lookup can steer traffic to them.
func (n *Node) registerLocked(p *pod) error {
	for _, l := range p.listeners {
		if l.kind == kindOutbound {
			continue
		}
		for _, ip := range p.ips {
			if err := n.opts.Listeners.Put(ip, l.port(), l.ln); err != nil {
				return fmt.Errorf("register listener %s:%d: %w", ip, l.port(), err)
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
			n.opts.Listeners.Delete(ip, l.port()) //nolint:errcheck // best effort on a failed setup
		}
		l.ln.Close()
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

// startAcceptLoops serves every listener of p until it is closed.
func (n *Node) startAcceptLoops(p *pod) {
	for _, l := range p.listeners {
		serve := n.serveOutbound
		switch l.kind {
		case kindPlaintext:
			serve = n.servePlaintext
		case kindHBONE:
			serve = n.serveHBONE
		}
		p.wg.Go(func() { n.acceptLoop(p, l, serve) })
	}
}

func (n *Node) acceptLoop(p *pod, l *podListener, serve func(context.Context, *pod, net.Conn)) {
	for {
		c, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// E.g. EMFILE: back off instead of spinning; the listener stays.
			n.log.Error("accept failed", "pod", p.name(), "listener", l.kind, "err", err)
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if reason := n.limits.admitSocket(l.kind); reason != "" {
			n.refuseAccepted(p, l.kind, c, reason)
			continue
		}
		n.goConn(p, l.kind, c, serve)
	}
}

// refuseAccepted refuses a connection a limit does not admit. A refused
// outbound connection still consumes its original destination: the
// connect hook recorded one for it in the LRU orig_dst map, where it
// would otherwise stay until evicted, one per refused connection.
func (n *Node) refuseAccepted(p *pod, kind string, c net.Conn, reason string) {
	dir := dirInbound
	if kind == kindOutbound {
		dir = dirOutbound
		n.opts.OrigDst.Lookup(p.info.NetnsCookie, addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())) //nolint:errcheck // only consumed
	}
	n.metrics.rejected(dir, reason)
	n.limits.refused.add(reason, dir, n.limits)
	refuse(c)
}
