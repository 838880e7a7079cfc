package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// serveHBONE terminates mTLS on the pod's 15008 socket and serves the HBONE
// CONNECT streams on it.
func (n *Node) serveHBONE(ctx context.Context, p *pod, c net.Conn) {
	src := addrPort(c.RemoteAddr())
	cfg := n.opts.Certs.ServerTLSConfig(p.id, n.authorizer(src))
	tc := hbone.NewServerConn(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, n.opts.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		reason := handshakeReason(err)
		n.log.Warn("inbound hbone handshake failed, connection closed",
			"pod", p.name(), "src_addr", src.String(), "dst_addr", addrPort(c.LocalAddr()).String(),
			"reason", reason, "err", err)
		n.metrics.handshakeFailures.WithLabelValues(reason).Inc()
		return
	}
	n.server.ServeConn(ctx, tc, inboundHandler{n: n, p: p})
}

// authorizer returns the TLS peer check for a connection from src: the peer's
// SPIFFE id must be the identity of the workload that owns src's address, so
// a workload cannot present another's certificate from its own address.
func (n *Node) authorizer(src netip.AddrPort) func(spiffe.ID, tls.ConnectionState) error {
	return func(peer spiffe.ID, _ tls.ConnectionState) error {
		return authorizePeer(n.Index(), peer, src.Addr())
	}
}

// inboundHandler delivers HBONE streams to the app in its pod.
type inboundHandler struct {
	n *Node
	p *pod
}

// ServeHBONE checks the stream's authority is this pod, authorizes the
// peer with the pod's current policy and dials the app. The stream holds a
// connection slot until its upstream is closed.
func (h inboundHandler) ServeHBONE(ctx context.Context, req *hbone.Request) (net.Conn, error) {
	n := h.n
	n.metrics.opened(dirInbound, protoHBONE)
	if !n.limits.conns.take() {
		n.metrics.rejected(dirInbound, reasonMaxConnections)
		n.limits.refused.add(reasonMaxConnections, dirInbound, n.limits)
		return nil, fmt.Errorf("%w (%s)", errOverloaded, reasonMaxConnections)
	}
	c, err := h.serve(ctx, req)
	if err != nil {
		n.limits.conns.give()
		return nil, err
	}
	c.release = n.limits.conns.give
	return c, nil
}

func (h inboundHandler) serve(ctx context.Context, req *hbone.Request) (*trackedConn, error) {
	n := h.n
	if err := checkAuthority(h.p, req.Authority); err != nil {
		n.log.Warn("hbone stream refused", "pod", h.p.name(), "src_addr", req.PeerAddr.String(),
			"src_identity", req.PeerID.String(), "authority", req.Authority.String(), "err", err)
		return nil, err
	}
	srcW := mtlsSource(n.Index(), req.PeerID, req.PeerAddr.Addr())
	ic := &inboundConn{
		pod: h.p, src: req.PeerAddr, dst: req.Authority, srcW: workloadName(srcW),
		conn: policy.Conn{MTLS: true, Identity: req.PeerID, Workload: workloadUID(srcW),
			Addr: req.PeerAddr.Addr(), Port: req.Authority.Port()},
	}
	if d := n.admit(ic); !d.Allow {
		return nil, &policyError{d: d}
	}
	c, err := n.deliverHBONE(ctx, ic)
	if err != nil {
		h.p.live.remove(ic)
		return nil, err
	}
	return c, nil
}

// deliverHBONE dials the app for an admitted stream; a revocation during
// the dial cancels it.
func (n *Node) deliverHBONE(ctx context.Context, ic *inboundConn) (*trackedConn, error) {
	ctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	if !ic.attach(cancel) {
		return nil, ic.revokedErr()
	}
	c, err := n.dial(ctx, dirInbound, ic.pod, ic.dst)
	if err != nil {
		if perr := ic.revokedErr(); perr != nil {
			return nil, perr
		}
		return nil, fmt.Errorf("deliver to %s: %w", ic.dst, err)
	}
	if !ic.attach(func() { c.Close() }) {
		return nil, ic.revokedErr()
	}
	return &trackedConn{Conn: c, ic: ic}, nil
}

// checkAuthority refuses streams not addressed to one of the pod's addresses
// or addressed to a mesh port (which would loop back into ztunnel).
func checkAuthority(p *pod, a netip.AddrPort) error {
	if !a.IsValid() || a.Port() == 0 {
		return fmt.Errorf("%w: invalid authority %q", hbone.ErrDenied, a.String())
	}
	if !p.owns(a.Addr()) {
		return fmt.Errorf("%w: authority %s is not an address of pod %s", hbone.ErrDenied, a, p.name())
	}
	if isMeshPort(a.Port()) {
		return fmt.Errorf("%w: authority %s is a mesh port", hbone.ErrDenied, a)
	}
	return nil
}

func isMeshPort(port uint16) bool {
	switch port {
	case mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort, mesh.DNSPort:
		return true
	}
	return false
}

// inboundDone writes the access log line of one finished HBONE stream.
func (n *Node) inboundDone(req *hbone.Request, res hbone.Result) {
	idx := n.Index()
	r := &record{
		direction: dirInbound, protocol: protoHBONE, mtls: true,
		src: req.PeerAddr, dst: req.Authority,
		srcW: idx.ByIP(req.PeerAddr.Addr()), dstW: idx.ByIP(req.Authority.Addr()),
		srcID: req.PeerID,
		sent:  res.BytesIn, received: res.BytesOut,
		start: time.Now().Add(-res.Duration),
		err:   res.Err,
	}
	if r.dstW != nil {
		r.dstID = idx.Config.Identity(r.dstW)
	}
	if res.Status == http.StatusBadRequest || res.Status == http.StatusMethodNotAllowed {
		n.metrics.opened(r.direction, r.protocol) // refused before ServeHBONE
	}
	var perr *policyError
	if errors.As(res.Err, &perr) {
		r.authz = &perr.d
	}
	n.logAccess(r)
}

// servePlaintext delivers a connection sk_lookup steered to 15006, if the
// pod's policy admits plaintext from its source. Its local address is the
// original destination.
func (n *Node) servePlaintext(ctx context.Context, p *pod, c net.Conn) {
	idx := n.Index()
	r := &record{
		direction: dirInbound, protocol: protoPlaintext, start: time.Now(),
		src: addrPort(c.RemoteAddr()), dst: addrPort(c.LocalAddr()),
		dstW: &p.workload, dstID: p.id,
	}
	r.srcW = idx.ByIP(r.src.Addr())
	n.metrics.opened(r.direction, r.protocol)
	if err := checkAuthority(p, r.dst); err != nil {
		r.err = fmt.Errorf("refused: %w", err)
		n.logAccess(r)
		return
	}
	ic := &inboundConn{
		pod: p, src: r.src, dst: r.dst, srcW: workloadName(r.srcW),
		conn: policy.Conn{Workload: workloadUID(r.srcW), Addr: r.src.Addr(), Port: r.dst.Port(),
			FromNode: n.fromNode(r.src.Addr())},
	}
	d := n.admit(ic)
	if !d.Allow {
		r.err, r.authz = &policyError{d: d}, &d
		n.logAccess(r)
		return
	}
	if d.Reason == policy.ReasonKubeletProbe {
		r.authz = &d // the access log says why policies did not apply
	}
	defer p.live.remove(ic)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ic.attach(func() { cancel(); c.Close() })
	n.proxyPlaintext(ctx, ic, c, r)
	ic.end()
	if d := ic.revocation(); d != nil {
		r.err, r.authz = &policyError{d: *d, closed: true}, d
	}
	n.logAccess(r)
}

// proxyPlaintext dials the app and joins c to it, filling r. A revocation
// cancels ctx and closes c, which ends both.
func (n *Node) proxyPlaintext(ctx context.Context, ic *inboundConn, c net.Conn, r *record) {
	dctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	up, err := n.dial(dctx, dirInbound, ic.pod, r.dst)
	cancel()
	if err != nil {
		r.err = fmt.Errorf("deliver to %s: %w", r.dst, err)
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	r.sent, r.received, r.err = relay.Join(c, up)
}
