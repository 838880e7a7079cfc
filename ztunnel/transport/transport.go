// Package transport opens the upstream of a flow: on the source side an
// HBONE stream to the destination pod's node tunnel (mTLS with the source
// pod's certificate, the destination's identity required) or plain TCP to a
// destination outside the mesh; on the destination side the connection to
// the app inside its pod. Every socket it makes takes a unit of the fd
// budget until closed.
package transport

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
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// ClientCerts gives the TLS config of an HBONE connection from local to
// expectedPeer (identity.Manager).
type ClientCerts interface {
	ClientTLSConfig(local, expectedPeer spiffe.ID) *tls.Config
}

// Transport opens upstreams. Safe for concurrent use.
type Transport struct {
	hbone       *hbone.Client
	certs       ClientCerts
	limits      *limits.Limits
	rec         *record.Recorder
	dialTimeout time.Duration
	balancer    *balance.Balancer
	failover    Failover
	local       LocalDialer
}

// LocalDialer is the same-node fast path (ztunnel's Node): when dst is an
// address of a pod of this node whose identity is f's destination
// identity, it makes f's upstream itself (handled), or says why not; it
// calls sending, when set, before it asks the destination's policy.
// Otherwise (not handled) the flow goes over HBONE.
type LocalDialer func(ctx context.Context, p *flow.Pod, f *flow.Flow, dst netip.AddrPort, sending func()) (c net.Conn, handled bool, err error)

// Options configure a Transport.
type Options struct {
	HBONE       *hbone.Client
	Certs       ClientCerts
	Limits      *limits.Limits
	Record      *record.Recorder
	DialTimeout time.Duration
	// Balancer picks the endpoints of Service connections; Failover
	// bounds their retries (zero: DefaultFailover).
	Balancer *balance.Balancer
	Failover Failover
	// Local, when set, takes the flows between two pods of this node
	// (see LocalDialer).
	Local LocalDialer
}

// New returns a Transport; Close it to close its pooled HBONE connections.
func New(o Options) *Transport {
	if o.Failover == (Failover{}) {
		o.Failover = DefaultFailover
	}
	return &Transport{hbone: o.HBONE, certs: o.Certs, limits: o.Limits, rec: o.Record,
		dialTimeout: o.DialTimeout, balancer: o.Balancer, failover: o.Failover, local: o.Local}
}

// Dial opens the upstream of outbound flow f from pod p: an HBONE stream
// to the destination pod's ztunnel, or a plain TCP connection for a
// passthrough. Each TCP connect is bounded by the dial timeout (see dial):
// a destination node or address that does not answer fails after it, as
// before; the whole of it by dialBudget.
func (t *Transport) Dial(ctx context.Context, p *flow.Pod, f *flow.Flow) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.dialBudget())
	defer cancel()
	return t.dialTo(ctx, p, f, f.Dst, nil)
}

// answerGrace is what an outbound flow's budget allows beyond the
// destination tunnel's own dial timeout for the answer to its CONNECT
// (transit, and queues at either end).
const answerGrace = 5 * time.Second

// dialBudget bounds an outbound flow's upstream as a whole: a dial timeout
// for its HBONE stream to go out (the wait for a pooled connection among a
// burst's others, their TLS handshakes), then the destination's delivery,
// which it bounds by its own dial timeout and answers 503 after, and
// answerGrace. The app's connection was accepted at once, so its own
// connect timeout no longer applies: with the dial timeout alone as the
// budget, a burst queued behind handshakes and deliveries on a busy node
// was reset although both ends were healthy, the source giving up on
// streams the destination was still delivering within its own timeout.
func (t *Transport) dialBudget() time.Duration { return 2*t.dialTimeout + answerGrace }

// dialTo opens f's upstream at dst (the original destination, or the
// endpoint of a Service chosen for it): HBONE to dst's pod with f's
// identities (or the same-node fast path when dst's pod is on this node),
// or plain TCP for a passthrough. sending, when set, is
// called as the HBONE CONNECT goes out (hbone.Target.Sending).
func (t *Transport) dialTo(ctx context.Context, p *flow.Pod, f *flow.Flow, dst netip.AddrPort, sending func()) (net.Conn, error) {
	if f.Protocol == flow.Passthrough {
		c, err := t.dial(ctx, flow.Outbound, p, netip.AddrPort{}, dst)
		if err != nil {
			return nil, fmt.Errorf("passthrough dial %s: %w", dst, err)
		}
		return c, nil
	}
	if t.local != nil {
		if c, handled, err := t.local(ctx, p, f, dst, sending); handled {
			return c, err
		}
	}
	var h http.Header
	if f.PerRequest && f.AppProtocol != "" {
		h = http.Header{hbone.HeaderAppProtocol: {f.AppProtocol}}
	}
	c, err := t.hbone.Dial(ctx, hbone.Target{
		Header:    h,
		SrcID:     f.SrcID,
		DstID:     f.DstID,
		SrcIP:     p.IPFor(dst.Addr()),
		HBONEAddr: netip.AddrPortFrom(dst.Addr(), mesh.HBONEPort),
		Authority: dst,
		TLS:       t.certs.ClientTLSConfig(f.SrcID, f.DstID),
		Sending:   sending,
		Dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return t.dial(ctx, flow.Outbound, p, netip.AddrPort{}, addr)
		},
	})
	if err == nil && c == nil {
		err = errors.New("hbone client returned no conn")
	}
	if err != nil {
		return nil, err // already says hbone, the authority and the address
	}
	return c, nil
}

// Deliver connects to the app at dst inside pod p from the caller's
// address src where p's netns allows it (podnet.Net.DialFrom: src's port
// is 0 for a mesh caller, else the port of a caller from outside the
// mesh), bounded by the dial timeout (dial's): the upstream of an inbound
// flow.
func (t *Transport) Deliver(ctx context.Context, p *flow.Pod, src netip.AddrPort, dst netip.AddrPort) (net.Conn, error) {
	c, err := t.dial(ctx, flow.Inbound, p, src, dst)
	if err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", dst, err)
	}
	return c, nil
}

// CloseSource closes the pooled HBONE connections dialed from ip (a pod
// going away: they keep its netns alive).
func (t *Transport) CloseSource(ip netip.Addr) { t.hbone.CloseSource(ip) }

// Close closes every pooled HBONE connection.
func (t *Transport) Close() error { return t.hbone.Close() }

// dial connects from inside p's netns (marked, so the capture lets it
// pass), from the caller's address from if valid (a delivery), else from
// the pod's, bounded by the dial timeout; the socket takes a unit of the
// fd budget until it is closed.
// Without one left it fails with limits.ErrOverloaded, counted as a
// rejection in dir.
func (t *Transport) dial(ctx context.Context, dir flow.Direction, p *flow.Pod, from netip.AddrPort, addr netip.AddrPort) (net.Conn, error) {
	if !t.limits.FDs.Take() {
		t.rec.Rejected(dir, limits.ReasonFDBudget)
		t.limits.NoteRefusal(limits.ReasonFDBudget, string(dir))
		return nil, fmt.Errorf("dial %s: %w (%s)", addr, limits.ErrOverloaded, limits.ReasonFDBudget)
	}
	ctx, cancel := context.WithTimeout(ctx, t.dialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if from.Addr().IsValid() {
		c, err = p.Net.DialFrom(ctx, from, addr)
	} else {
		c, err = p.Net.Dial(ctx, addr)
	}
	if err != nil {
		t.limits.FDs.Give()
		return nil, err
	}
	return &budgeted{Conn: c, release: t.limits.FDs.Give}, nil
}

// Stats counts the pooled HBONE connections and their streams.
func (t *Transport) Stats() hbone.PoolStats { return t.hbone.Stats() }
