//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but HBONE needs HTTP/2 on TLS conns ztunnel dials and accepts itself inside pod netns, which net/http's server cannot take over.

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

	"golang.org/x/net/http2"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// Server limits.
const (
	handshakeTimeout     = 10 * time.Second
	maxConcurrentStreams = 1000
	serverIdleTimeout    = 10 * time.Minute // then GOAWAY; clients redial
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
	log  *slog.Logger
	h2   *http2.Server
	base *http.Server // the error log and graceful shutdown of h2's connections

	mu     sync.Mutex
	conns  map[*tls.Conn]struct{} // being served; guarded by mu
	closed bool                   // guarded by mu
	wg     sync.WaitGroup         // ServeConn calls; Add only under mu while !closed
}

// NewServer returns a Server.
func NewServer(o ServerOptions) *Server {
	log := cmp.Or(o.Logger, slog.Default())
	s := &Server{
		log: log,
		h2: &http2.Server{
			MaxConcurrentStreams:         maxConcurrentStreams,
			IdleTimeout:                  serverIdleTimeout,
			MaxUploadBufferPerStream:     streamWindow,
			MaxUploadBufferPerConnection: connWindow,
			MaxReadFrameSize:             maxFrame,
		},
		base:  &http.Server{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		conns: map[*tls.Conn]struct{}{},
	}
	// Lets base.Shutdown send GOAWAY on the connections h2 serves.
	if err := http2.ConfigureServer(s.base, s.h2); err != nil {
		panic(fmt.Sprintf("hbone: configure http2 server: %v", err))
	}
	return s
}

// ServeConn serves the CONNECTs on conn, each stream with h on its own
// goroutine, until the connection ends, ctx is done or the Server is
// closed, and closes conn. It does the TLS handshake if the caller has not;
// the TLS config must verify the client (identity's ServerTLSConfig does).
func (s *Server) ServeConn(ctx context.Context, conn *tls.Conn, h Handle) {
	if !s.track(conn) {
		conn.Close()
		return
	}
	defer s.untrack(conn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cs, err := s.accept(ctx, conn)
	if err != nil {
		s.log.Debug("hbone connection refused", "peer", conn.RemoteAddr().String(), "err", err)
		return
	}
	cs.h = h
	s.h2.ServeConn(tlsConn(conn), &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.base,
		Handler:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveStream(w, r, cs) }),
	})
	if cs.closeAndWait() == 0 && ctx.Err() == nil {
		// A peer that passed mTLS but never sent a request: truncated or
		// malformed HTTP/2 (x/net reports those details only at debug).
		s.log.Warn("hbone connection closed without any CONNECT (truncated or malformed HTTP/2)",
			"peer", cs.remote.String(), "peer_identity", cs.peer.String())
	}
}

// accept finishes the handshake and reads who the peer is.
func (s *Server) accept(ctx context.Context, conn *tls.Conn) (*connState, error) {
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	st := conn.ConnectionState()
	if st.NegotiatedProtocol != identity.ALPN {
		return nil, fmt.Errorf("client negotiated alpn %q, want %q", st.NegotiatedProtocol, identity.ALPN)
	}
	peer, err := identity.PeerID(st)
	if err != nil {
		return nil, fmt.Errorf("peer identity: %w", err)
	}
	return &connState{
		peer:   peer,
		remote: netaddr.AddrPort(conn.RemoteAddr()),
		local:  netaddr.AddrPort(conn.LocalAddr()),
	}, nil
}

func (s *Server) track(conn *tls.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(conn *tls.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops taking connections, sends GOAWAY on every connection so
// clients open new streams elsewhere, and waits until the streams in flight
// have ended; when ctx is done first it closes the rest as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.base.Shutdown(ctx) // no listeners: only starts the GOAWAYs
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
	for c := range s.conns {
		if err := c.NetConn().Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}
