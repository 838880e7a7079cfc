package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// tlsPair is a TLS connection over loopback TCP: the client as Client.Dial
// makes it (over a counted socket) and the server as NewServerConn does.
func tlsPair(t *testing.T) (cli net.Conn, counted *countingConn, srv *tls.Conn) {
	t.Helper()
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted = &countingConn{Conn: raw}
	tc := tls.Client(newBatchConn(counted), e.m.ClientTLSConfig(idA, idB))
	srv = NewServerConn(<-accepted, e.m.ServerTLSConfig(idB, nil))
	t.Cleanup(func() { tc.Close(); srv.Close() })
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return tlsConn(tc), counted, srv
}

func TestBatchedTLSWritesOneSyscallPerFrame(t *testing.T) {
	cli, counted, srv := tlsPair(t)
	msg := make([]byte, maxFrame+9) // a full DATA frame: 17 TLS records
	rand.Read(msg)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(msg))
		io.ReadFull(srv, b)
		got <- b
	}()
	before := counted.count()
	if n, err := cli.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if w := counted.count() - before; w != 1 {
		t.Errorf("one %d-byte write reached the socket as %d writes, want 1", len(msg), w)
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatal("server read different bytes")
	}
	// Small writes go out at once, each in its own batch: no waiting.
	before = counted.count()
	for _, s := range []string{"a", "b"} {
		cli.Write([]byte(s))
		b := make([]byte, 1)
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(srv, b); err != nil || string(b) != s {
			t.Fatalf("small write %q: read %q, %v", s, b, err)
		}
	}
	if w := counted.count() - before; w != 2 {
		t.Errorf("2 small writes made %d socket writes", w)
	}
}

func TestReadBatcherHoldsNoBufferWhenIdle(t *testing.T) {
	cli, _, srv := tlsPair(t)
	rb := &srv.NetConn().(*batchConn).rd
	if rb.rc == nil {
		t.Fatal("no raw conn for a TCP socket: reads are not batched")
	}
	msg := make([]byte, 3<<20+12345)
	rand.Read(msg)
	go cli.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(srv, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %v, equal %v", err, bytes.Equal(got, msg))
	}
	// Drained: the next read waits for data without a buffer and honors
	// the deadline.
	srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := srv.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past deadline: %v, want a timeout", err)
	}
	if rb.buf != nil {
		t.Errorf("idle connection holds a %d-byte read buffer", cap(*rb.buf))
	}
	// The peer's close reaches the reader.
	srv.SetReadDeadline(time.Time{})
	cli.Close()
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after peer close: %v, want EOF", err)
	}
}

// delayedConn delays its first write after arm by delay.
type delayedConn struct {
	net.Conn
	mu    sync.Mutex
	delay time.Duration
}

func (c *delayedConn) arm(d time.Duration) {
	c.mu.Lock()
	c.delay = d
	c.mu.Unlock()
}

func (c *delayedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	d := c.delay
	c.delay = 0
	c.mu.Unlock()
	time.Sleep(d)
	return c.Conn.Write(p)
}

// TestFirstStreamUsesServerFrameSize: the first stream on a new connection
// must send large DATA frames even when the server's SETTINGS come late.
func TestFirstStreamUsesServerFrameSize(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		dc := &delayedConn{Conn: raw}
		tc := NewServerConn(dc, e.m.ServerTLSConfig(idB, nil))
		if tc.Handshake() != nil {
			raw.Close()
			return
		}
		dc.arm(100 * time.Millisecond) // the SETTINGS frame
		e.server().ServeConn(context.Background(), tc, e.handle)
	}()
	tg := e.target(idA, upstream(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }))
	tg.HBONEAddr = ln.Addr().(*net.TCPAddr).AddrPort()
	var counted *sizeConn
	tg.Dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr.String())
		counted = &sizeConn{Conn: c}
		return counted, err
	}
	s := e.dial(tg)
	defer s.Close()
	if _, err := s.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "1 MiB sent", func() bool { return counted.total() > 1<<20 })
	if m := counted.largest(); m < maxFrame {
		t.Errorf("largest socket write %d bytes: DATA frames were cut to the 16 KiB default", m)
	}
}

// sizeConn records the sizes of its writes.
type sizeConn struct {
	net.Conn
	mu         sync.Mutex
	max, bytes int
}

func (c *sizeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.max, c.bytes = max(c.max, len(p)), c.bytes+len(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *sizeConn) largest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

func (c *sizeConn) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
