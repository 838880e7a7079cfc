// Package hbone carries TCP connections as HTTP/2 CONNECT streams over
// mutual TLS, in the Istio HBONE wire format: TLS 1.3 with ALPN "h2", one
// CONNECT per proxied connection with :authority "<dest pod ip>:<port>",
// W3C traceparent and baggage headers, and answers 200 (connected), 401
// (denied by policy), 503 (upstream failed), 400 (bad authority) and 405
// (not CONNECT).
//
// Half-close works both ways, as on a TCP connection: a client's
// CloseWrite reaches the upstream as a TCP half-close and the upstream's
// answer keeps flowing; when the upstream ends its side first, the client
// reads EOF and what it still sends is delivered to the upstream. Close
// resets a stream that is still open.
//
// Both ends are CONNECT-only HTTP/2 written for this one job on x/net's
// Framer and hpack (clientconn.go, serverconn.go): one reader goroutine
// per connection queues each stream's DATA, writes go straight from the
// writing goroutine, and a stream costs the connection no goroutine and no
// buffer beyond the data received and not yet read. The server hands every
// CONNECT to the caller as a Stream (the request, the answer, and then
// the client's connection) with a handler on its own goroutine, so the
// caller authorizes, dials, copies and records the stream like any other
// connection. Protocol errors of a peer end its stream (RST_STREAM) or its
// connection (GOAWAY), nothing else.
//
// Throughput: HTTP/2 over crypto/tls would make one system call (and one
// wakeup of the peer) per 16 KiB TLS record and read one record per call;
// batchConn, under the TLS layer of both ends, writes each HTTP/2 write as
// one system call and reads what the socket has at once. DATA frames are
// up to maxFrame (256 KiB) and the relay moves bulk transfers in chunks
// that size. Small writes are never held back.
package hbone

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Header names HBONE passes along.
const (
	HeaderTraceparent = "Traceparent"
	HeaderBaggage     = "Baggage"
	// HeaderAppProtocol is AgentMesh's own: the source tunnel writes the
	// stream's HTTP itself, request by request, in this application
	// protocol (http1, http2, grpc, a2a, mcp), so the destination tunnel
	// may serve it request by request too. Other HBONE peers ignore it.
	HeaderAppProtocol = "Agentmesh-App-Protocol"
)

// Target says where and as whom a Client opens a stream.
type Target struct {
	SrcID, DstID spiffe.ID
	SrcIP        netip.Addr     // source pod ip (part of the pool key)
	HBONEAddr    netip.AddrPort // dest pod ip:15008
	Authority    netip.AddrPort // dest pod ip:target port
	TLS          *tls.Config    // client config from identity.Manager.ClientTLSConfig
	// Dial makes the TCP connection (ztunnel dials inside the source pod
	// netns with SO_MARK); a plain net.Dialer when nil.
	Dial   func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	Header http.Header // extra request headers (traceparent, baggage)
	// Sending, when set, is called before each CONNECT is sent, once its
	// pooled connection is up: what follows is the round trip to the
	// destination tunnel (a balancer times that, not the pool's TLS
	// handshakes).
	Sending func()
}

func (t *Target) validate() error {
	switch {
	case t.SrcID.IsZero() || t.DstID.IsZero():
		return errors.New("target needs source and destination ids")
	case !t.HBONEAddr.IsValid() || !t.Authority.IsValid() || t.Authority.Port() == 0:
		return errors.New("target needs hbone address and authority")
	case t.TLS == nil:
		return errors.New("target needs a tls config")
	}
	return nil
}

// StatusError is a non-200 answer to a CONNECT.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: server answered %d: %s", e.Code, e.Message)
}

// ErrDenied is wrapped by refusals that mean "policy denied": Stream.Refuse
// answers them 401 (see StatusFor).
var ErrDenied = errors.New("denied")

// requestHeader returns t's headers plus a traceparent if it had none.
func requestHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	if out.Get(HeaderTraceparent) == "" {
		out.Set(HeaderTraceparent, NewTraceparent())
	}
	return out
}

// NewTraceparent returns a W3C traceparent with fresh random ids, sampled.
func NewTraceparent() string {
	var b [24]byte
	rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}
