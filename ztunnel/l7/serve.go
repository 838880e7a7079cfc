// Package l7 proxies HTTP per request inside the node tunnel: the app's
// connection is served as HTTP/1.x or HTTP/2 cleartext (prior knowledge)
// by net/http's server, and each request is forwarded on its own
// (net/http/httputil's ReverseProxy over an http.Transport whose dials the
// caller provides: HBONE streams to the endpoint chosen for the request).
// Keep-alive, chunked bodies, trailers, upgrades (WebSocket) and streaming
// responses (SSE, gRPC streams) are net/http's; nothing here buffers a
// body.
package l7

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServeConn serves the HTTP requests the app sends on c with h until the
// app closes c, the server gives up on it (a malformed request gets its
// 400 first), or ctx is done. The caller still owns c and closes it after.
// Requests' contexts derive from ctx.
func ServeConn(ctx context.Context, c net.Conn, h http.Handler, log *slog.Logger) {
	cc := &ownedConn{Conn: c, closed: make(chan struct{})}
	var handlers sync.WaitGroup
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			defer handlers.Done()
			// The request's body and the response flow independently,
			// as through any proxy. Without this, net/http's HTTP/1
			// server reads what is left of the body and closes it when
			// the response starts: an answer that comes before the whole
			// body waits for it, and the upstream leg's transport, still
			// reading the body (to its end, after a Content-Length's
			// bytes), fails its write and closes the upstream connection
			// under the response (a rare cut SSE answer, seen by MCP
			// clients as "request terminated without response"). HTTP/2
			// is duplex already (the call then fails; nothing to do).
			_ = http.NewResponseController(w).EnableFullDuplex()
			h.ServeHTTP(w, r)
		}),
		Protocols:   &protos,
		BaseContext: func(net.Listener) context.Context { return ctx },
		// The app's own framing errors and the like, at debug: the app
		// gets its 400; the tunnel's log is not the app's.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// An HTTP/2 connection idle this long is closed with a GOAWAY,
		// as an HTTP/1.x keep-alive one is; the app reconnects.
		IdleTimeout: 10 * time.Minute,
	}
	ln := &oneConn{c: cc, done: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln) //nolint:errcheck // ends with the listener; the conn's end is what matters
	}()
	select {
	case <-cc.closed: // the server is done with it, or an upgrade ended
	case <-ctx.Done():
		c.Close()
	}
	ln.Close()
	srv.Close()
	<-served
	// A handler still running owns a hijacked (upgraded) connection until
	// its copy ends: c is closed, so it ends.
	c.Close()
	handlers.Wait()
}

// ownedConn is the app's connection as the server sees it: its first
// Close (by the server, or by the proxy after an upgrade) says the
// connection is over; the caller closes the underlying conn.
type ownedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *ownedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// oneConn is a listener that accepts c once and then blocks until closed.
type oneConn struct {
	mu   sync.Mutex
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return dummyAddr{} }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "tcp" }
func (dummyAddr) String() string  { return "ztunnel" }
