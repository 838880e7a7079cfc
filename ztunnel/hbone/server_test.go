//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but HBONE needs HTTP/2 on TLS conns ztunnel dials and accepts itself inside pod netns, which net/http's server cannot take over.

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// rawConn is an HTTP/2 client connection to the env's server as idA.
func (e *env) rawConn() *http2.ClientConn {
	e.t.Helper()
	tc, err := tls.Dial("tcp", e.addr.String(), e.m.ClientTLSConfig(idA, idB))
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cc.Close() })
	return cc
}

func TestBadRequestsRefused(t *testing.T) {
	called := false
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		called = true
		return nil, ErrDenied
	})
	e := newEnv(t, h, ClientOptions{})
	cc := e.rawConn()
	for _, tc := range []struct {
		method, host string
		want         int
	}{
		{http.MethodConnect, "example.com:80", 400},
		{http.MethodConnect, "127.0.0.1:0", 400},
		{http.MethodConnect, "[fe80::1%25lo]:80", 400},
		{http.MethodGet, "127.0.0.1:80", 405},
		{http.MethodPost, "127.0.0.1:80", 405},
	} {
		req := &http.Request{Method: tc.method, Host: tc.host, URL: &url.URL{Scheme: "https", Host: tc.host, Path: "/"}, Header: http.Header{}}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.host, resp.StatusCode, tc.want)
		}
	}
	if called {
		t.Error("handler called for a bad request")
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 5 })
}

func TestHalfClose(t *testing.T) {
	// The upstream reads to EOF, then answers with what it got.
	countThenAnswer := func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(b))
	}
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, countThenAnswer)))
	defer c.Close()
	payload := strings.Repeat("x", 1<<20)
	go func() {
		io.WriteString(c, payload)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 1048576 bytes" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestUpstreamClosesFirst(t *testing.T) {
	banner := func(c *net.TCPConn) { io.WriteString(c, "bye") }
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, banner)))
	defer c.Close()
	got, err := io.ReadAll(c) // the client never half-closes
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want bye and EOF", got, err)
	}
}

func TestServerSurvivesGarbage(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	cfg := e.m.ClientTLSConfig(idA, idB)
	for _, junk := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM", // truncated preface
		strings.Repeat("\x00\xff", 5000),
	} {
		tc, err := tls.Dial("tcp", e.addr.String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(tc, junk)
		if junk[0] == 'P' {
			tc.Close() // truncated: hang up mid-preface
			continue
		}
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		// The server hangs up (EOF, or a reset when junk was left unread).
		if _, err := io.Copy(io.Discard, tc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("junk %.10q: server did not hang up: %v", junk, err)
		}
		tc.Close()
	}
	raw, err := net.Dial("tcp", e.addr.String()) // not even TLS
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(raw, "hello\r\n\r\n")
	raw.Close()
	waitFor(t, "garbage connections dropped", func() bool { return e.srv.Conns() == 0 })

	c := e.dial(e.target(idA, upstream(t, echo)))
	defer c.Close()
	io.WriteString(c, "still serving")
	buf := make([]byte, 13)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still serving" {
		t.Fatalf("after garbage: %q, %v", buf, err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("traffic", func(t *testing.T) {
		up := upstream(t, echo) // cleaned up after env: env's Close must end the streams
		e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
		for range 10 {
			c := e.dial(e.target(idA, up))
			io.WriteString(c, "x")
			c.Read(make([]byte, 1))
			// left open on purpose: Close must tear it down
		}
		e.dial(e.target(idC, up)).Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServerCloseEndsStreams(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, echo)))
	defer c.Close()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(c); done <- err }()
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after Server.Close")
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 1 })
}

func TestGoAwayMovesNewStreamsToNewConn(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{IdleTimeout: time.Hour})
	tg := e.target(idA, upstream(t, echo))
	old := e.dial(tg)
	defer old.Close()
	first := e.server()
	e.mu.Lock()
	e.srv = e.newServer() // new connections go to a fresh server
	e.mu.Unlock()
	shut := make(chan error, 1)
	go func() { shut <- first.Shutdown(context.Background()) }()

	// Once the client has read the GOAWAY, a Dial opens a second connection.
	waitFor(t, "a new connection after GOAWAY", func() bool {
		c := e.dial(tg)
		defer c.Close()
		return e.cli.Stats().Conns == 2
	})
	io.WriteString(old, "old stream")
	buf := make([]byte, 10)
	if _, err := io.ReadFull(old, buf); err != nil || string(buf) != "old stream" {
		t.Fatalf("stream on the draining conn: %q, %v", buf, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a stream was open", err)
	default:
	}
	old.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
	waitFor(t, "drained conn dropped", func() bool { return e.cli.Stats().Conns == 1 })
}

func TestWriteAfterUpstreamClosedIsErrClosed(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, func(c *net.TCPConn) { io.WriteString(c, "bye") })))
	defer c.Close()
	if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v", got, err)
	}
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = io.WriteString(c, "more")
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after the stream ended: %v, want net.ErrClosed", err)
	}
}

// TestUpstreamEndsFirstClientStillSends: when the upstream ends its side
// first the client reads EOF, and what it sends afterwards still reaches
// the upstream (TCP half-close, both ways).
func TestUpstreamEndsFirstClientStillSends(t *testing.T) {
	got := make(chan int, 1)
	greetThenCount := func(c *net.TCPConn) {
		io.WriteString(c, "hello")
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- len(b)
	}
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{})
	c := e.dial(e.target(idA, upstream(t, greetThenCount)))
	defer c.Close()
	if b, err := io.ReadAll(c); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello and EOF", b, err)
	}
	payload := strings.Repeat("x", 1<<20)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatalf("write after the upstream ended its side: %v", err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != len(payload) {
			t.Fatalf("upstream got %d bytes, want %d", n, len(payload))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream did not get the client's end of stream")
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 1 })
	if r := e.results()[0]; r.Status != 200 || r.BytesIn != 1<<20 || r.BytesOut != 5 || r.Err != nil {
		t.Errorf("result %+v", r)
	}
}

// TestForeignClient: a general HTTP/2 client (x/net's Transport, as
// Istio's ztunnel stands for one) opens a CONNECT with a streaming body,
// gets 200 and moves bytes both ways, and reads the text of refusals.
func TestForeignClient(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, r *Request) (net.Conn, error) {
		switch r.Authority.Port() {
		case 1:
			return nil, fmt.Errorf("policy x: %w", ErrDenied)
		case 2:
			return nil, errors.New("connection refused")
		}
		return dialUpstream(ctx, r)
	})
	e := newEnv(t, h, ClientOptions{})
	tr := &http2.Transport{TLSClientConfig: e.m.ClientTLSConfig(idA, idB)}
	defer tr.CloseIdleConnections()
	connect := func(authority string, body io.Reader) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodConnect, "https://"+e.addr.String(), body)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = authority
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("CONNECT %s: %v", authority, err)
		}
		return resp
	}

	pr, pw := io.Pipe()
	resp := connect(upstream(t, echo).String(), pr)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	for _, msg := range []string{"ping", strings.Repeat("y", 100<<10)} {
		go io.WriteString(pw, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %d bytes: %.20q, %v", len(msg), buf, err)
		}
	}
	pw.Close() // END_STREAM: the upstream sees EOF, echo half-closes
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after the client's end of stream: %q, %v; want EOF", rest, err)
	}

	for port, want := range map[uint16]struct {
		code int
		text string
	}{1: {401, "Unauthorized"}, 2: {503, "Service Unavailable"}} {
		resp := connect(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String(), nil)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != want.code || strings.TrimSpace(string(body)) != want.text {
			t.Errorf("port %d: %d %q, %v; want %d %q", port, resp.StatusCode, body, err, want.code, want.text)
		}
	}
	waitFor(t, "OnDone", func() bool { return len(e.results()) == 3 })
}
