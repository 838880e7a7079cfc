package hbone

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// Server limits.
const (
	handshakeTimeout     = 10 * time.Second
	maxConcurrentStreams = 1000
)

// Server timeouts (variables for tests).
var (
	// prefaceTimeout bounds how long a client may take, after the TLS
	// handshake, to send the HTTP/2 preface and its SETTINGS.
	prefaceTimeout = 10 * time.Second
	// serverIdleTimeout closes a connection without streams for this
	// long, with a GOAWAY first; clients redial.
	serverIdleTimeout = 10 * time.Minute
)

// Request is one CONNECT as the server received it.
type Request struct {
	PeerID    spiffe.ID      // from the verified client certificate
	PeerAddr  netip.AddrPort // TCP remote address of the TLS connection
	LocalAddr netip.AddrPort
	Authority netip.AddrPort // parsed :authority; zero when Invalid
	Header    http.Header
	// Invalid says why the request cannot be served (ErrNotConnect,
	// ErrBadAuthority); nil for a well-formed CONNECT.
	Invalid error
}

// Errors of a Request that cannot be served; Refuse answers them 405 and
// 400.
var (
	ErrNotConnect   = errors.New("method not allowed: HBONE takes only CONNECT")
	ErrBadAuthority = errors.New("bad authority")
)

// Handle serves one stream: it answers the request (Stream.Accept or
// Stream.Refuse) and, once accepted, uses the stream as the client's
// connection until it is done. The stream ends when Handle returns. ctx
// ends when the client resets the stream or the connection goes away.
type Handle func(ctx context.Context, s *Stream)

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger *slog.Logger
}

// Server answers HBONE CONNECTs on TLS connections.
type Server struct {
	log *slog.Logger

	mu       sync.Mutex
	conns    map[*serverConn]struct{} // being served; guarded by mu
	closed   bool                     // no new connections; guarded by mu
	draining bool                     // Drain came: new connections get GOAWAY once started; guarded by mu
	wg       sync.WaitGroup           // ServeConn calls; Add only under mu while !closed
}

// NewServer returns a Server.
func NewServer(o ServerOptions) *Server {
	return &Server{log: cmp.Or(o.Logger, slog.Default()), conns: map[*serverConn]struct{}{}}
}

// peer is who is at the other end of a connection: the identity of its
// verified certificate and the TCP addresses.
type peer struct {
	id            spiffe.ID
	remote, local netip.AddrPort
}

// ServeConn serves the CONNECTs on conn, each stream with h on its own
// goroutine, until the connection ends, ctx is done or the Server is
// closed, and closes conn. It does the TLS handshake if the caller has not;
// the TLS config must verify the client (identity's ServerTLSConfig does).
// It returns once every stream handler has returned.
func (s *Server) ServeConn(ctx context.Context, conn *tls.Conn, h Handle) {
	sc := &serverConn{log: s.log, hard: conn.NetConn()}
	if !s.track(sc) {
		conn.Close()
		return
	}
	defer s.untrack(sc)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	p, err := accept(ctx, conn)
	if err != nil {
		s.log.Debug("hbone connection refused", "peer", conn.RemoteAddr().String(), "err", err)
		return
	}
	s.serve(ctx, sc, tlsConn(conn), p, h)
}

// serve runs HTTP/2 on nc (the TLS connection, or a plain one in tests)
// for sc until the connection ends.
func (s *Server) serve(ctx context.Context, sc *serverConn, nc net.Conn, p peer, h Handle) {
	served, err := sc.serve(ctx, nc, p, h)
	if served == 0 && ctx.Err() == nil && !s.isClosed() && !errors.Is(err, errDrained) {
		// A peer that passed mTLS but never sent a request: truncated or
		// malformed HTTP/2.
		s.log.Warn("hbone connection closed without any CONNECT (truncated or malformed HTTP/2)",
			"peer", p.remote.String(), "peer_identity", p.id.String(), "err", err)
		return
	}
	s.log.Debug("hbone connection closed", "peer", p.remote.String(), "streams", served, "err", err)
}

// accept finishes the handshake and reads who the peer is.
func accept(ctx context.Context, conn *tls.Conn) (peer, error) {
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		return peer{}, fmt.Errorf("tls handshake: %w", err)
	}
	st := conn.ConnectionState()
	if st.NegotiatedProtocol != identity.ALPN {
		return peer{}, fmt.Errorf("client negotiated alpn %q, want %q", st.NegotiatedProtocol, identity.ALPN)
	}
	id, err := identity.PeerID(st)
	if err != nil {
		return peer{}, fmt.Errorf("peer identity: %w", err)
	}
	return peer{id: id, remote: netaddr.AddrPort(conn.RemoteAddr()), local: netaddr.AddrPort(conn.LocalAddr())}, nil
}

func (s *Server) track(sc *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.draining {
		// Accepted before the drain closed its listener: served, so
		// that its client sends its CONNECT again elsewhere.
		sc.drainOnStart = true
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops taking connections, sends GOAWAY on every connection so
// clients open new streams elsewhere, closes each connection once its
// streams have ended, and waits for that; when ctx is done first it closes
// the rest as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for sc := range s.conns {
		sc.shutdown() // does not block
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Drain is Shutdown without the wait, and gentler with connections still
// in their handshake: GOAWAY on every connection (one in its handshake,
// or one accepted but not yet served, gets it right after its preface;
// clients open their next streams, and send a refused first one again,
// elsewhere), each closed once its streams have ended. The caller has
// closed the listeners. A ztunnel that handed its pods to a successor
// drains so: the peers' pooled connections would otherwise keep bringing
// it new streams until its drain timeout cut them.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for sc := range s.conns {
		sc.drain() // does not block
	}
}

// Conns counts the connections being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes every connection being served and waits until their
// ServeConn calls and stream handlers have returned. Later ServeConn calls
// close their connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var errs []error
	for sc := range s.conns {
		if err := sc.hard.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}
