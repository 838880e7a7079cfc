package hbone

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// pool is the connections of one poolKey. Guarded by Client.mu.
type pool struct {
	conns []*pconn
	dials []*dialCall // connection attempts in progress, shared by the Dials waiting
}

// maxParallelDials bounds the connection attempts in flight per pool key.
// A burst of N new streams to one destination needs N/maxStreams
// connections: one attempt at a time would make the last stream wait for
// every handshake before it.
const maxParallelDials = 8

// pconn is one pooled TLS connection.
type pconn struct {
	cc        *clientConn
	tc        *tls.Conn
	streams   int       // open streams; guarded by Client.mu
	idleSince time.Time // when streams last dropped to 0; guarded by Client.mu
}

func (pc *pconn) close() { pc.cc.Close() }

// dialCall is a connection attempt other Dials may wait for.
type dialCall struct {
	ctx     context.Context // of the Dial making the attempt
	done    chan struct{}   // closed when err is set
	err     error
	waiters int // Dials counting on it, the maker included; guarded by Client.mu
}

// acquire returns a connection with a stream reserved on it, dialing one or
// waiting for an attempt in progress when none has room.
func (c *Client) acquire(ctx context.Context, t *Target) (*pconn, error) {
	key := poolKey{t.SrcID, t.DstID, t.SrcIP, t.HBONEAddr.Addr()}
	for {
		pc, call, mine, err := c.reserve(key, ctx)
		switch {
		case err != nil:
			return nil, err
		case pc != nil:
			return pc, nil
		case mine:
			c.connect(key, t, call)
		}
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// Another Dial's canceled attempt is no reason to fail this one.
		if call.err != nil && (call.ctx == ctx || call.ctx.Err() == nil) {
			return nil, call.err
		}
	}
}

// reserve reserves a stream on a pooled connection with room, or returns the
// attempt to wait for (mine: the caller must make it).
func (c *Client) reserve(key poolKey, ctx context.Context) (pc *pconn, call *dialCall, mine bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, false, net.ErrClosed
	}
	p := c.pools[key]
	if p == nil {
		p = &pool{}
		c.pools[key] = p
	}
	for _, pc := range p.conns {
		if pc.streams < c.maxStreams && pc.cc.reserve() {
			pc.streams++
			return pc, nil, false, nil
		}
	}
	// Wait for an attempt that will have room for us, else make one, else
	// wait for the least awaited.
	var least *dialCall
	for _, d := range p.dials {
		if least == nil || d.waiters < least.waiters {
			least = d
		}
	}
	if least != nil && (least.waiters < c.maxStreams || len(p.dials) >= maxParallelDials) {
		least.waiters++
		return nil, least, false, nil
	}
	d := &dialCall{ctx: ctx, done: make(chan struct{}), waiters: 1}
	p.dials = append(p.dials, d)
	return nil, d, true, nil
}

// connect dials a new connection for key and adds it to the pool.
func (c *Client) connect(key poolKey, t *Target, call *dialCall) {
	pc, err := c.dialConn(call.ctx, t)
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(call.done)
	p := c.pools[key]
	// The pool may be gone (Close, CloseSource), or be a new one made after
	// that: either way this connection belongs nowhere.
	live := p != nil && slices.Contains(p.dials, call)
	if live {
		p.dials = slices.DeleteFunc(p.dials, func(d *dialCall) bool { return d == call })
	}
	switch {
	case err != nil:
		call.err = err
	case c.closed || !live:
		pc.close()
		call.err = net.ErrClosed
	default:
		pc.idleSince = time.Now()
		p.conns = append(p.conns, pc)
	}
}

// dialConn makes the TCP connection, the TLS handshake and the HTTP/2 client.
func (c *Client) dialConn(ctx context.Context, t *Target) (*pconn, error) {
	dial := t.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr.String())
		}
	}
	raw, err := dial(ctx, t.HBONEAddr)
	if err != nil {
		return nil, err
	}
	cfg := t.TLS.Clone()
	// Small first records help a browser render early; a tunnel's records
	// are batched (batchConn) and only cost more to seal.
	cfg.DynamicRecordSizingDisabled = true
	if !slices.Contains(cfg.NextProtos, identity.ALPN) {
		cfg.NextProtos = append(cfg.NextProtos, identity.ALPN)
	}
	tc := tls.Client(newBatchConn(raw), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != identity.ALPN {
		tc.Close()
		return nil, fmt.Errorf("server negotiated alpn %q, want %q", p, identity.ALPN)
	}
	cc, err := newClientConn(tc, c.log)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("http2 client: %w", err)
	}
	c.log.Debug("hbone connection up", "dst", t.HBONEAddr.String(), "src", t.SrcID.String(), "dst_id", t.DstID.String())
	return &pconn{cc: cc, tc: tc}, nil
}

// release gives back a stream reserved on pc.
func (c *Client) release(pc *pconn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc.streams--
	if pc.streams == 0 {
		pc.idleSince = time.Now()
	}
}

// sweep removes the connections that are broken, draining without streams
// or idle too long, and returns them for closing. The first idle
// connection of a pool key may idle for the idle timeout, the others (a
// burst's spares) for the spare idle timeout.
func (c *Client) sweep(now time.Time) []*pconn {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dead []*pconn
	for k, p := range c.pools {
		kept := false // an idle connection of p is kept already
		p.conns = slices.DeleteFunc(p.conns, func(pc *pconn) bool {
			idle := pc.streams == 0
			limit := c.idle
			if kept {
				limit = c.spareIdle
			}
			gone := pc.cc.closed() || (idle && (!pc.cc.usable() || now.Sub(pc.idleSince) > limit))
			if gone {
				dead = append(dead, pc)
			} else if idle {
				kept = true
			}
			return gone
		})
		if len(p.conns) == 0 && len(p.dials) == 0 {
			delete(c.pools, k)
		}
	}
	return dead
}
