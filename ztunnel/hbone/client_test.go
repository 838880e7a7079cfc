package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestEchoThroughStream(t *testing.T) {
	var seen http.Header
	var mu sync.Mutex
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		mu.Lock()
		seen = r.Header
		mu.Unlock()
		if r.PeerID != idA || !r.PeerAddr.Addr().IsLoopback() {
			return nil, fmt.Errorf("peer %s at %s", r.PeerID, r.PeerAddr)
		}
		return dialUpstream(ctx, r)
	})
	e := newEnv(t, h, ClientOptions{})
	tg := e.target(idA, upstream(t, echo))
	tg.Header = http.Header{"Baggage": {"k=v"}}
	c := e.dial(tg)
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello and EOF", got, err)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if seen.Get("Baggage") != "k=v" || len(seen.Get("Traceparent")) != 55 {
		t.Errorf("headers %v: want baggage passed and a traceparent", seen)
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 1 })
	if r := e.results()[0]; r.Status != 200 || r.BytesIn != 5 || r.BytesOut != 5 || r.Err != nil {
		t.Errorf("result %+v", r)
	}
}

func TestParallelStreamsShareOneConn(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	tg := e.target(idA, upstream(t, echo))
	const n = 50
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.cli.Dial(context.Background(), tg)
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = c
			msg := bytes.Repeat([]byte{byte(i)}, 4096)
			c.Write(msg)
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
				t.Errorf("stream %d: echo mismatch, %v", i, err)
			}
		}()
	}
	wg.Wait()
	if s := e.cli.Stats(); s != (PoolStats{Conns: 1, Streams: n}) {
		t.Errorf("stats %+v, want 1 conn with %d streams", s, n)
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if s := e.cli.Stats(); s.Streams != 0 {
		t.Errorf("after close: stats %+v", s)
	}
}

func TestPoolKeys(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	up := upstream(t, echo)
	a, c := e.target(idA, up), e.target(idC, up)
	a2 := a
	a2.SrcIP = netip.MustParseAddr("127.0.0.2")
	for _, tg := range []Target{a, a, c, a2} {
		s := e.dial(tg)
		defer s.Close()
	}
	if s := e.cli.Stats(); s != (PoolStats{Conns: 3, Streams: 4}) {
		t.Errorf("stats %+v, want 3 conns (idA, idC, idA from another ip) with 4 streams", s)
	}
}

func TestMaxStreamsAndIdle(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{MaxStreamsPerConn: 2, IdleTimeout: 200 * time.Millisecond})
	tg := e.target(idA, upstream(t, echo))
	for range 3 {
		defer e.dial(tg).Close()
	}
	if s := e.cli.Stats(); s != (PoolStats{Conns: 2, Streams: 3}) {
		t.Errorf("stats %+v, want 2 conns for 3 streams at 2 per conn", s)
	}
	time.Sleep(400 * time.Millisecond)
	if s := e.cli.Stats(); s.Conns != 2 {
		t.Errorf("busy conns dropped: %+v", s)
	}
}

// TestSpareIdleConnsDropped: after a burst that needed three connections
// to one destination, the spares close soon, one stays for reuse.
func TestSpareIdleConnsDropped(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{MaxStreamsPerConn: 1, IdleTimeout: time.Hour, SpareIdleTimeout: 100 * time.Millisecond})
	tg := e.target(idA, upstream(t, echo))
	var streams []net.Conn
	for range 3 {
		streams = append(streams, e.dial(tg))
	}
	if s := e.cli.Stats(); s.Conns != 3 {
		t.Fatalf("stats %+v, want 3 conns", s)
	}
	for _, s := range streams {
		s.Close()
	}
	waitFor(t, "spare conns dropped", func() bool { return e.cli.Stats().Conns == 1 })
	time.Sleep(300 * time.Millisecond) // the kept one outlives the spare timeout
	if s := e.cli.Stats(); s.Conns != 1 {
		t.Errorf("stats %+v, want the one kept connection", s)
	}
	e.dial(tg).Close() // and it is reused
	if s := e.cli.Stats(); s.Conns != 1 {
		t.Errorf("stats %+v after reuse, want 1 conn", s)
	}
}

func TestIdleConnsDropped(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{IdleTimeout: 200 * time.Millisecond})
	e.dial(e.target(idA, upstream(t, echo))).Close()
	if s := e.cli.Stats(); s.Conns != 1 {
		t.Fatalf("stats %+v", s)
	}
	waitFor(t, "idle conn dropped", func() bool { return e.cli.Stats().Conns == 0 })
}

// TestBurstDialsInParallel: a burst needing several connections to one
// destination opens them in parallel, one per maxStreams waiting Dials.
func TestBurstDialsInParallel(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{MaxStreamsPerConn: 2})
	tg := e.target(idA, upstream(t, echo))
	var dials, inFlight, most atomic.Int32
	tg.Dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		dials.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr.String())
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			c, err := e.cli.Dial(context.Background(), tg)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { c.Close() })
		})
	}
	wg.Wait()
	if d, m := dials.Load(), most.Load(); d != 5 || m < 2 {
		t.Errorf("%d dials, at most %d at once; want 5 (10 streams, 2 per conn), several at once", d, m)
	}
}

func TestConcurrentDialsShareAttempt(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	tg := e.target(idA, upstream(t, echo))
	var dials atomic.Int32
	tg.Dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		dials.Add(1)
		time.Sleep(100 * time.Millisecond)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr.String())
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.cli.Dial(context.Background(), tg)
			if err != nil {
				t.Error(err)
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("20 concurrent Dials made %d connections, want 1", n)
	}
}

func TestStatusMapping(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		if r.Authority.Port() == 1 {
			return nil, fmt.Errorf("policy x: %w", ErrDenied)
		}
		return nil, errors.New("connection refused")
	})
	e := newEnv(t, h, ClientOptions{})
	for port, want := range map[uint16]int{1: 401, 2: 503} {
		_, err := e.cli.Dial(context.Background(), e.target(idA, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)))
		var se *StatusError
		if !errors.As(err, &se) || se.Code != want {
			t.Errorf("port %d: err %v, want status %d", port, err, want)
		}
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 2 })
	if s := e.cli.Stats(); s.Streams != 0 || s.Conns != 1 {
		t.Errorf("stats %+v after refused streams", s)
	}
}

func TestDialErrors(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	tg := e.target(idA, upstream(t, echo))
	tg.TLS = e.m.ClientTLSConfig(idA, idC) // the server is idB
	if _, err := e.cli.Dial(context.Background(), tg); err == nil || !strings.Contains(err.Error(), "peer id "+idB.String()+", want "+idC.String()) {
		t.Errorf("wrong peer: err %v", err)
	}
	e.cli.Close()
	if _, err := e.cli.Dial(context.Background(), e.target(idA, tg.Authority)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after Close: err %v, want net.ErrClosed", err)
	}
}

func TestIPv6AuthorityAndTraceparent(t *testing.T) {
	var gotAuth netip.AddrPort
	var gotTrace string
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		gotAuth, gotTrace = r.Authority, r.Header.Get("Traceparent")
		return nil, errors.New("no upstream")
	})
	e := newEnv(t, h, ClientOptions{})
	tg := e.target(idA, netip.MustParseAddrPort("[fd00:18::5]:8080"))
	const trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tg.Header = http.Header{"Traceparent": {trace}}
	if _, err := e.cli.Dial(context.Background(), tg); err == nil {
		t.Fatal("dial succeeded, want 503")
	}
	if gotAuth.String() != "[fd00:18::5]:8080" || gotTrace != trace {
		t.Errorf("server saw authority %s traceparent %q", gotAuth, gotTrace)
	}
}

// TestBulkBothWays: 48 MiB each way at once through one stream, far more
// than the flow-control windows, arrive intact (the windows are given
// back as the data is read).
func TestBulkBothWays(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, echo)))
	defer c.Close()
	const size = 48 << 20
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(src)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read %d of %d bytes back (equal %v), %v", len(got), size, bytes.Equal(got, src), err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// TestSilentPeerClosedByKeepalive: a server that stops answering (its
// socket stays open) is pinged, and its connection closed, failing the
// stream, after pingTimeout.
func TestSilentPeerClosedByKeepalive(t *testing.T) {
	defer func(a, b time.Duration) { pingAfter, pingTimeout = a, b }(pingAfter, pingTimeout)
	pingAfter, pingTimeout = 100*time.Millisecond, 200*time.Millisecond
	freeze := make(chan struct{})
	frozen := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		return dialUpstream(ctx, r)
	})
	e := newEnv(t, h, ClientOptions{})
	// A proxy in front of the server that stops forwarding on freeze.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", e.addr.String())
		if err != nil {
			return
		}
		defer s.Close()
		go io.Copy(s, c)
		go func() {
			<-freeze
			c.(*net.TCPConn).SetLinger(0)
			s.Close() // the server side goes away; the client's socket stays open
			close(frozen)
		}()
		io.Copy(c, s)
		<-frozen
		<-time.After(5 * time.Second) // keep the client's socket open, silent
	}()
	tg := e.target(idA, upstream(t, echo))
	tg.HBONEAddr = ln.Addr().(*net.TCPAddr).AddrPort()
	c := e.dial(tg)
	defer c.Close()
	close(freeze)
	<-frozen
	start := time.Now()
	stop := time.AfterFunc(5*time.Second, func() { c.Close() }) // no keepalive: fail, not hang
	defer stop.Stop()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, errConnClosed) {
		t.Errorf("read on a stream of a silent connection: %v, want the connection closed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("silent connection closed after %v", d)
	}
}
