package pipeline

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// LocalDest is a pod of this node that an outbound flow's destination
// address belongs to, held for the same-node fast path: the node does not
// wait for it to go (teardown, drain) before Release is called.
type LocalDest struct {
	Pod  *flow.Pod
	Live *authorize.Live
	// Ctx ends when the pod goes away: the connection is closed then.
	Ctx context.Context
	// Release lets the pod go; called once, when the connection ends or
	// could not be made.
	Release func()
}

// Local is the same-node fast path: the upstream of outbound flow f from
// pod src to dst, an address of pod d of this node, made without TLS or HTTP/2. The
// node knows both pods, so the source identity needs no certificate: the
// destination side is admitted exactly as an HBONE stream with f's source
// identity would be (a connection slot, AgentPolicy with the source as an
// authenticated peer, delivery into d's netns, closed when a new config
// revokes it) and recorded as an inbound flow of protocol local once the
// connection ended (Outbound calls finishLocal). The upstream is the
// app's socket itself, so the relay splices between the two sockets.
//
// A refusal is an *authorize.Error (wrapping hbone.ErrDenied, as a 401
// would be) and a failed delivery the dial's error.
func (pl *Pipeline) Local(ctx context.Context, src *flow.Pod, f *flow.Flow, dst netip.AddrPort, d LocalDest) (net.Conn, error) {
	// From the source pod's address, as an HBONE connection dialed in its
	// netns would be (the app's own socket may be on loopback, where the
	// capture redirected it), with the app's port.
	fi := flow.New(flow.Inbound, flow.Local, netip.AddrPortFrom(src.IPFor(dst.Addr()), f.Src.Port()), dst)
	fi.SrcID = f.SrcID
	pl.Resolve.HBONE(fi)
	pl.Record.Opened(fi)
	f.Protocol, f.MTLS = flow.Local, false
	up, ac, err := pl.admit(ctx, d.Pod, d.Live, fi)
	if err != nil {
		d.Release()
		fi.Err = err
		var perr *authorize.Error
		if errors.As(err, &perr) {
			fi.Authz = &perr.D
		}
		pl.Record.Access(fi)
		return nil, err
	}
	pl.Record.Connected(fi)
	lu := &localUpstream{Conn: up, pl: pl, fi: fi, ac: ac, release: d.Release}
	// Revoked, or the destination pod went: both sockets are closed, as
	// the end of the HBONE stream would close the app's.
	lu.stop = context.AfterFunc(d.Ctx, lu.abort)
	ac.Attach(lu.abort)
	return lu, nil
}

// localUpstream is the destination side of a same-node connection: the
// app's socket in the destination pod, guarded by its authorization. It
// adds nothing to reads and writes, so the relay splices it.
type localUpstream struct {
	net.Conn
	pl      *Pipeline
	fi      *flow.Flow // the inbound flow, recorded by finish
	ac      *authorize.Conn
	stop    func() bool
	release func()
	once    sync.Once

	mu      sync.Mutex
	down    net.Conn // the app's connection, once joined; guarded by mu
	aborted bool     // guarded by mu
}

// join names the app's connection, which abort closes too.
func (u *localUpstream) join(down net.Conn) {
	u.mu.Lock()
	u.down = down
	aborted := u.aborted
	u.mu.Unlock()
	if aborted {
		down.Close()
	}
}

// abort closes both sockets, ending the relay in both directions.
func (u *localUpstream) abort() {
	u.mu.Lock()
	u.aborted = true
	down := u.down
	u.mu.Unlock()
	u.Conn.Close()
	if down != nil {
		down.Close()
	}
}

// Close closes the socket and lets the destination pod go.
func (u *localUpstream) Close() error {
	err := u.Conn.Close()
	u.once.Do(func() {
		u.stop()
		u.release()
	})
	return err
}

// CloseWrite half-closes the socket.
func (u *localUpstream) CloseWrite() error {
	if cw, ok := u.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// BareTCP is the app's socket (relay.BareTCP), nil on a fake network.
// The guard's reads and writes only explain errors after a revocation,
// which finishLocal reports from the authorization itself.
func (u *localUpstream) BareTCP() *net.TCPConn {
	c := u.Conn
	if g, ok := c.(interface{ Unguarded() net.Conn }); ok {
		c = g.Unguarded()
	}
	switch s := c.(type) {
	case *net.TCPConn:
		return s
	case relay.BareTCP:
		return s.BareTCP()
	}
	return nil
}

// SyscallConn is the socket's, for the relay's readiness wait.
func (u *localUpstream) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := u.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// joinLocal tells a same-node upstream the app's connection c.
func joinLocal(up, c net.Conn) {
	if u, ok := up.(*localUpstream); ok {
		u.join(c)
	}
}

// finishLocal records the inbound side of a same-node connection that
// ended, with outbound flow f's bytes (what its opener sent is what the
// destination received).
func finishLocal(up net.Conn, f *flow.Flow) {
	u, ok := up.(*localUpstream)
	if !ok {
		return
	}
	fi := u.fi
	fi.Sent, fi.Received, fi.Err = f.Sent, f.Received, f.Err
	if d := u.ac.Revocation(); d != nil {
		fi.Err, fi.Authz = &authorize.Error{D: *d, Closed: true}, d
	}
	u.pl.Record.Access(fi)
}
