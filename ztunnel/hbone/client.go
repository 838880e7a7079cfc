package hbone

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Client defaults.
const (
	DefaultIdleTimeout       = time.Minute
	DefaultSpareIdleTimeout  = 3 * time.Second
	DefaultMaxStreamsPerConn = 100
)

// Keepalive: a connection quiet for pingAfter is pinged, and closed when
// nothing arrives within pingTimeout (variables for tests).
var (
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
)

// HTTP/2 sizes, client and server alike.
//
// Memory per stream: data received and not yet taken by the other side
// (the upstream on the server, the app on the client) is buffered up to
// streamWindow, and all streams of a connection together up to connWindow;
// these buffers are taken as data arrives and given back as it is read, so
// a quiet stream holds none. Streams hold nothing else, on either side: no
// goroutine of the connection, no send buffer (a write goes out from the
// writer's own buffer); on the server each stream's handler runs on its
// own goroutine, which is the caller's (it relays the stream). The relay
// reads with at most 256 KiB while a bulk transfer runs and nothing while
// it is quiet (it waits for a stream to be readable, or for a socket).
// Per connection, batchConn holds up to 2*maxBatch only while a write or
// unread data is in flight, each end's Framer one buffer of the largest
// frame written, and the client's one of the largest frame read (the
// server reads DATA straight into the chunks its streams queue).
const (
	streamWindow = 4 << 20   // one bulk stream is not stalled by window updates
	connWindow   = 16 << 20  // a few bulk streams per connection
	maxFrame     = 256 << 10 // DATA frames up to the relay's largest buffer
)

// ClientOptions configure a Client.
type ClientOptions struct {
	Logger      *slog.Logger
	IdleTimeout time.Duration // a connection without streams is closed after this
	// SpareIdleTimeout closes sooner the idle connections of a pool key
	// beyond the first: a burst that needed many connections leaves one.
	SpareIdleTimeout  time.Duration
	MaxStreamsPerConn int // a new connection is opened beyond this
}

// Client opens HBONE streams over pooled mTLS HTTP/2 connections.
//
// Connections are pooled per (source id, destination id, source ip,
// destination ip): a TLS connection carries one source identity's
// certificate, it was dialed from inside one source pod's network namespace
// (its source ip) and it lands in one destination pod's namespace, so a
// connection can only carry streams that agree on all four.
type Client struct {
	log        *slog.Logger
	idle       time.Duration
	spareIdle  time.Duration
	maxStreams int
	ctx        context.Context // canceled by Close: aborts every stream
	cancel     context.CancelFunc
	wg         sync.WaitGroup // the janitor

	mu     sync.Mutex
	pools  map[poolKey]*pool // guarded by mu
	closed bool              // guarded by mu
}

type poolKey struct {
	src, dst     spiffe.ID
	srcIP, dstIP netip.Addr
}

// PoolStats counts a Client's connections and open streams.
type PoolStats struct {
	Conns   int `json:"conns"`
	Streams int `json:"streams"`
}

// NewClient returns a Client; Close it to stop its connections.
func NewClient(o ClientOptions) *Client {
	c := &Client{
		log:        cmp.Or(o.Logger, slog.Default()),
		idle:       cmp.Or(o.IdleTimeout, DefaultIdleTimeout),
		spareIdle:  cmp.Or(o.SpareIdleTimeout, DefaultSpareIdleTimeout),
		maxStreams: cmp.Or(o.MaxStreamsPerConn, DefaultMaxStreamsPerConn),
		pools:      map[poolKey]*pool{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.janitor()
	return c
}

// Dial opens a stream to t.Authority through t.HBONEAddr, reusing a pooled
// connection when one has room. A non-200 answer is a *StatusError.
func (c *Client) Dial(ctx context.Context, t Target) (net.Conn, error) {
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("hbone dial: %w", err)
	}
	for attempt := 1; ; attempt++ {
		pc, err := c.acquire(ctx, &t)
		if err != nil {
			return nil, fmt.Errorf("hbone dial %s: %w", t.HBONEAddr, err)
		}
		if t.Sending != nil {
			t.Sending()
		}
		s, err := c.openStream(ctx, pc, &t)
		if err == nil {
			return s, nil
		}
		c.release(pc)
		if attempt == maxAttempts || !unprocessed(err) || ctx.Err() != nil {
			return nil, err
		}
		c.log.Debug("hbone stream refused before processing, retrying", "dst", t.HBONEAddr.String(), "err", err)
	}
}

// maxAttempts bounds the CONNECTs one Dial sends when the server refuses
// them unprocessed (GOAWAY raced the request).
const maxAttempts = 3

// unprocessed reports whether a CONNECT failed before the server processed
// it, so it is safe to send it again on another connection.
func unprocessed(err error) bool { return errors.Is(err, errUnprocessed) }

// Stats counts the pooled connections and the streams open on them.
func (c *Client) Stats() PoolStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s PoolStats
	for _, p := range c.pools {
		for _, pc := range p.conns {
			s.Conns++
			s.Streams += pc.streams
		}
	}
	return s
}

// Close closes every connection, aborting their streams, and stops the
// janitor. Dial fails with net.ErrClosed afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	var conns []*pconn
	if !c.closed {
		c.closed = true
		for k, p := range c.pools {
			conns = append(conns, p.conns...)
			delete(c.pools, k)
		}
	}
	c.mu.Unlock()
	c.cancel()
	for _, pc := range conns {
		pc.close()
	}
	c.wg.Wait()
	return nil
}

// janitor closes idle, broken and draining connections.
func (c *Client) janitor() {
	defer c.wg.Done()
	tick := time.NewTicker(min(max(min(c.idle, c.spareIdle)/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
			for _, pc := range c.sweep(time.Now()) {
				pc.close()
			}
		}
	}
}

// CloseSource closes the pooled connections dialed from srcIP, failing the
// streams on them, and fails the connection attempts in progress for it
// with net.ErrClosed. ztunnel calls it when a pod goes away: a connection
// dialed inside the pod's network namespace keeps that namespace alive.
// Later Dials from srcIP open new connections.
func (c *Client) CloseSource(srcIP netip.Addr) {
	srcIP = srcIP.Unmap()
	c.mu.Lock()
	var conns []*pconn
	for k, p := range c.pools {
		if k.srcIP.Unmap() == srcIP {
			conns = append(conns, p.conns...)
			delete(c.pools, k)
		}
	}
	c.mu.Unlock()
	for _, pc := range conns {
		pc.close()
	}
}
