package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// serveOutbound proxies one connection an app in p opened, redirected by the
// eBPF connect hooks to 127.0.0.1:15001 or [::1]:15001.
func (n *Node) serveOutbound(ctx context.Context, p *pod, c net.Conn) {
	src, local := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	orig, err := n.opts.OrigDst.Lookup(p.info.NetnsCookie, src, local)
	if err != nil {
		n.log.Error("outbound connection without original destination, closed",
			"pod", p.name(), "src_addr", src.String(), "dst_addr", local.String(), "err", err)
		n.metrics.rejected(dirOutbound, "no_orig_dst")
		return
	}
	orig = netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
	idx := n.Index()
	r := &record{
		direction: dirOutbound, src: src, dst: orig, start: time.Now(),
		srcW: &p.workload, srcID: p.id, dstW: idx.ByIP(orig.Addr()),
	}
	if r.dstW != nil && r.dstW.Enrolled {
		r.protocol, r.mtls = protoHBONE, true
		r.dstID = idx.Config.Identity(r.dstW)
	} else {
		r.protocol = protoPassthrough
	}
	n.metrics.opened(r.direction, r.protocol)
	up, err := n.dialOutbound(ctx, p, r)
	if err != nil {
		r.err = err
		n.logAccess(r)
		refuse(c) // a reset tells the app at once
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	r.sent, r.received, r.err = relay.Join(c, up)
	n.logAccess(r)
}

// dialOutbound opens the upstream of r: an HBONE stream to the destination
// pod's ztunnel, or a plain TCP connection for destinations outside the mesh.
func (n *Node) dialOutbound(ctx context.Context, p *pod, r *record) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	if r.protocol == protoPassthrough {
		c, err := n.dial(ctx, dirOutbound, p, r.dst)
		if err != nil {
			return nil, fmt.Errorf("passthrough dial %s: %w", r.dst, err)
		}
		return c, nil
	}
	t := hbone.Target{
		SrcID:     r.srcID,
		DstID:     r.dstID,
		SrcIP:     p.ipFor(r.dst.Addr()),
		HBONEAddr: netip.AddrPortFrom(r.dst.Addr(), mesh.HBONEPort),
		Authority: r.dst,
		TLS:       n.opts.Certs.ClientTLSConfig(r.srcID, r.dstID),
		Dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return n.dial(ctx, dirOutbound, p, addr)
		},
	}
	c, err := n.client.Dial(ctx, t)
	if err == nil && c == nil {
		err = errors.New("hbone client returned no conn")
	}
	if err != nil {
		return nil, err // already says hbone, the authority and the address
	}
	return c, nil
}
