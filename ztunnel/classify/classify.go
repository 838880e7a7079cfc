// Package classify is the pipeline's first look at an accepted connection:
// which way it goes, how it arrived, and where it was going (its original
// destination), from the listener that took it.
package classify

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// OrigDst finds the original destination of a connection the capture
// redirected to ztunnel. Lookup consumes the entry: a second lookup for
// the same tuple fails.
type OrigDst interface {
	Lookup(netnsCookie uint64, src, dst netip.AddrPort) (netip.AddrPort, error)
}

// Outbound classifies a connection an app of p opened, redirected to the
// pod's outbound listener: its original destination is in t, keyed by the
// pod netns and the connection's two ends.
func Outbound(t OrigDst, p *flow.Pod, c net.Conn) (*flow.Flow, error) {
	src, local := netaddr.AddrPort(c.RemoteAddr()), netaddr.AddrPort(c.LocalAddr())
	orig, err := t.Lookup(p.Cookie, src, local)
	if err != nil {
		return nil, fmt.Errorf("original destination of %s -> %s: %w", src, local, err)
	}
	return flow.New(flow.Outbound, "", src, netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())), nil
}

// Forget consumes the original destination of an outbound connection that
// is refused before Outbound: the capture recorded it in an LRU map, where
// it would otherwise stay until evicted.
func Forget(t OrigDst, p *flow.Pod, c net.Conn) {
	t.Lookup(p.Cookie, netaddr.AddrPort(c.RemoteAddr()), netaddr.AddrPort(c.LocalAddr())) //nolint:errcheck // only consumed
}

// Plaintext classifies a connection sk_lookup steered to the pod's
// plaintext listener: its local address is the original destination.
func Plaintext(c net.Conn) *flow.Flow {
	return flow.New(flow.Inbound, flow.Plaintext, netaddr.AddrPort(c.RemoteAddr()), netaddr.AddrPort(c.LocalAddr()))
}

// HBONE classifies a CONNECT received on the pod's HBONE listener: from
// the verified peer to its :authority.
func HBONE(r *hbone.Request) *flow.Flow {
	f := flow.New(flow.Inbound, flow.HBONE, r.PeerAddr, r.Authority)
	f.MTLS, f.SrcID = true, r.PeerID
	return f
}
