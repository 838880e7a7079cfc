package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
	"github.com/agentmesh/agentmesh/ztunnel/resolve"
)

// ServerCerts gives the TLS config of a pod's HBONE listener
// (identity.Manager): the pod's certificate, and authorize run on every
// peer's verified id.
type ServerCerts interface {
	ServerTLSConfig(local spiffe.ID, authorize func(peer spiffe.ID, cs tls.ConnectionState) error) *tls.Config
}

// HBONE terminates mTLS on pod p's HBONE listener (the peer's identity must
// own its source address) and serves the CONNECT streams on it, each on
// its own goroutine, until the connection ends.
func (pl *Pipeline) HBONE(ctx context.Context, p *flow.Pod, live *authorize.Live, c net.Conn) {
	src := netaddr.AddrPort(c.RemoteAddr())
	tc := hbone.NewServerConn(c, pl.ServerTLS.ServerTLSConfig(p.ID, authorize.PeerCheck(pl.Index, src)))
	hctx, cancel := context.WithTimeout(ctx, pl.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		reason := authorize.HandshakeReason(err)
		pl.Log.Warn("inbound hbone handshake failed, connection closed",
			"pod", p.String(), "src_addr", src.String(), "dst_addr", netaddr.AddrPort(c.LocalAddr()).String(),
			"reason", reason, "err", err)
		pl.Record.HandshakeFailed(reason)
		return
	}
	pl.HBONEServer.ServeConn(ctx, tc, func(ctx context.Context, s *hbone.Stream) { pl.stream(ctx, p, live, s) })
}

// stream is one CONNECT: authorized with the pod's current policy,
// delivered to the app, relayed and recorded. It holds a connection slot
// while it runs.
func (pl *Pipeline) stream(ctx context.Context, p *flow.Pod, live *authorize.Live, s *hbone.Stream) {
	f := classify.HBONE(&s.Request)
	pl.Resolve.HBONE(f)
	pl.Record.Opened(f)
	up, ac, err := pl.admitStream(ctx, p, live, f, s)
	if err != nil {
		f.Err = err
		var perr *authorize.Error
		if errors.As(err, &perr) {
			f.Authz = &perr.D
		}
		s.Refuse(err)
		pl.Record.Access(f)
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Close() }) // stream reset, connection gone
	if err := s.Accept(); err != nil {
		f.Err = err
		up.Close()
	} else {
		pl.Record.Connected(f)
		if hinted := pl.sourcePerRequest(f, s.Request.Header); ac.L7() || hinted {
			// Rules with L7 parts apply, each request is decided; or the
			// source tunnel proxies the stream per request: so does this
			// one (request metrics, server spans).
			f.Sent, f.Received, f.Err = pl.inboundRequests(ctx, p, f, ac, s, up, hinted)
		} else {
			f.Sent, f.Received, f.Err = relay.Join(s, up)
		}
	}
	stop()
	var perr *authorize.Error
	if errors.As(f.Err, &perr) {
		f.Authz = &perr.D
	}
	pl.Record.Access(f)
}

// sourcePerRequest reports whether a stream's CONNECT says its source tunnel
// writes the stream's HTTP request by request (hbone.HeaderAppProtocol,
// an HTTP-based protocol) while this tunnel proxies HTTP per request
// too; f then takes that application protocol.
func (pl *Pipeline) sourcePerRequest(f *flow.Flow, h http.Header) bool {
	if !pl.HTTP {
		return false
	}
	app, ok := detect.Declared(h.Get(hbone.HeaderAppProtocol))
	if !ok || app == detect.Opaque {
		return false
	}
	f.AppProtocol = string(app)
	return true
}

// admitStream checks the request, then admits it (admit).
func (pl *Pipeline) admitStream(ctx context.Context, p *flow.Pod, live *authorize.Live, f *flow.Flow, s *hbone.Stream) (net.Conn, *authorize.Conn, error) {
	if s.Invalid != nil {
		return nil, nil, s.Invalid
	}
	return pl.admit(ctx, p, live, f)
}

// admit takes a connection slot, authorizes and delivers inbound flow f
// from an authenticated peer (an HBONE stream, or a pod of this node):
// the upstream, guarded (its Close ends the authorization and gives the
// slot back), and its authorization, or why not.
func (pl *Pipeline) admit(ctx context.Context, p *flow.Pod, live *authorize.Live, f *flow.Flow) (net.Conn, *authorize.Conn, error) {
	if !pl.Limits.Conns.Take() {
		pl.Record.Rejected(flow.Inbound, limits.ReasonMaxConnections)
		pl.Limits.NoteRefusal(limits.ReasonMaxConnections, string(flow.Inbound))
		return nil, nil, fmt.Errorf("%w (%s)", limits.ErrOverloaded, limits.ReasonMaxConnections)
	}
	up, ac, err := pl.authorizeStream(ctx, p, live, f)
	if err != nil {
		pl.Limits.Conns.Give()
		return nil, nil, err
	}
	return up, ac, nil
}

// authorizeStream decides the stream and dials the app; a revocation
// during the dial cancels it.
func (pl *Pipeline) authorizeStream(ctx context.Context, p *flow.Pod, live *authorize.Live, f *flow.Flow) (net.Conn, *authorize.Conn, error) {
	if err := authorize.Destination(p, f.Dst); err != nil {
		pl.Log.Warn("hbone stream refused", "pod", p.String(), "protocol", string(f.Protocol), "src_addr", f.Src.String(),
			"src_identity", f.SrcID.String(), "authority", f.Dst.String(), "err", err)
		return nil, nil, err
	}
	ac := &authorize.Conn{
		Pod: p, Live: live, Src: f.Src, Dst: f.Dst, SrcWorkload: recordName(f.SrcWorkload),
		Policy: policy.Conn{MTLS: true, Identity: f.SrcID, Workload: resolve.UID(f.SrcWorkload),
			Addr: f.Src.Addr(), Port: f.Dst.Port()},
		// An HBONE stream's requests can be seen; the same-node path
		// splices sockets (it is not taken when L7 rules apply).
		Requests: f.Protocol == flow.HBONE,
	}
	if d := pl.Authorize.Admit(ac); !d.Allow {
		return nil, nil, &authorize.Error{D: d}
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !ac.Attach(cancel) {
		ac.End()
		return nil, nil, ac.RevokedErr()
	}
	up, err := pl.Transport.Deliver(dctx, p, netip.AddrPortFrom(f.Src.Addr(), 0), f.Dst)
	if err != nil {
		ac.End()
		if perr := ac.RevokedErr(); perr != nil {
			return nil, nil, perr
		}
		return nil, nil, err
	}
	if !ac.Attach(func() { up.Close() }) {
		ac.End()
		return nil, nil, ac.RevokedErr()
	}
	return authorize.Guard(up, ac, pl.Limits.Conns.Give), ac, nil
}

func recordName(w *meshconfig.Workload) string { return record.WorkloadName(w) }
