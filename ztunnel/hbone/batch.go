package hbone

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// maxBatch bounds the bytes batchConn gathers before it writes them out and
// readBatcher reads at once: a maxFrame DATA frame with its TLS record
// overhead fits. The buffers exist only while a write is in progress or
// read data waits for crypto/tls, so an idle connection holds none.
const maxBatch = 2 * maxFrame

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// batchConn sits under a tls.Conn. crypto/tls writes every record (at most
// 16 KiB) with its own write(2); between begin and end batchConn gathers
// them and writes them out together, so a 256 KiB HTTP/2 DATA frame costs
// one system call and one wakeup of the reader instead of sixteen. Nothing
// waits for more data: end always writes out what was gathered, so latency
// is unchanged.
type batchConn struct {
	net.Conn
	rd readBatcher

	mu       sync.Mutex
	batching bool    // guarded by mu
	buf      *[]byte // gathered records; guarded by mu, nil when empty
}

// Write gathers p during a batch and writes it straight through otherwise
// (alerts, handshake records, KeyUpdates sent by the read side).
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching {
		return b.Conn.Write(p)
	}
	if b.buf != nil && len(*b.buf)+len(p) > maxBatch {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= maxBatch {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = batchPool.Get().(*[]byte)
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// Read reads through the read batcher (see readBatcher).
func (b *batchConn) Read(p []byte) (int, error) { return b.rd.read(b.Conn, p) }

func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// end stops gathering and writes out what was gathered.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.buf == nil {
		return nil
	}
	_, err := b.Conn.Write(*b.buf)
	*b.buf = (*b.buf)[:0]
	batchPool.Put(b.buf)
	b.buf = nil
	return err
}

func newBatchConn(raw net.Conn) *batchConn {
	return &batchConn{Conn: raw, rd: newReadBatcher(raw)}
}

// batchedTLS is a tls.Conn over a batchConn whose writes are batched.
type batchedTLS struct {
	*tls.Conn
	raw *batchConn
}

// Write encrypts p into records and writes them with one system call (per
// maxBatch bytes).
func (c *batchedTLS) Write(p []byte) (int, error) {
	c.raw.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.end(); err == nil {
		err = ferr
	}
	return n, err
}

// closeTimeout bounds how long Close waits to send close_notify to a peer
// that does not read.
const closeTimeout = 250 * time.Millisecond

// Close sends close_notify and closes the connection, within closeTimeout.
func (c *batchedTLS) Close() error {
	t := time.AfterFunc(closeTimeout, func() { c.raw.Conn.Close() })
	defer t.Stop()
	return c.Conn.Close()
}

// tlsConn returns the conn HTTP/2 should use for tc: batched when tc was
// made over a batchConn.
func tlsConn(tc *tls.Conn) net.Conn {
	if raw, ok := tc.NetConn().(*batchConn); ok {
		return &batchedTLS{Conn: tc, raw: raw}
	}
	return tc
}

// NewServerConn returns the server side of a TLS connection over raw, set
// up so Server.ServeConn reads and writes its records in batches. Serving a
// tls.Conn made otherwise works too, at one system call per record.
func NewServerConn(raw net.Conn, cfg *tls.Config) *tls.Conn {
	cfg = cfg.Clone()
	cfg.DynamicRecordSizingDisabled = true // see dialConn
	return tls.Server(newBatchConn(raw), cfg)
}
