// Package detect tells what a flow carries: the Service port's declared
// application protocol (its appProtocol, or the Service's
// agentmesh.io/app-protocols annotation, resolved by the controller) when
// there is one, else a short bounded look at the client's first bytes
// (MSG_PEEK: nothing is consumed, so the L4 path still splices them) for
// an HTTP/1.x request line or the HTTP/2 client preface. Anything else,
// TLS started by the app, a client that sends nothing in time and the
// ports that are opaque by default (server-first protocols) stay Opaque.
//
// Today the decision is recorded (the access line's app_protocol, the
// ztunnel_protocol_detected_total counter); the per-request L7 path will
// take the flows it names HTTP, gRPC, A2A or MCP.
package detect

import (
	"bytes"
	"slices"
	"strings"
)

// App is what a flow's bytes are, as far as ztunnel handles them.
type App string

// Apps.
const (
	Opaque App = "tcp"   // copied as they are
	HTTP1  App = "http1" // HTTP/1.x (WebSocket upgrades included)
	HTTP2  App = "http2" // HTTP/2 cleartext, prior knowledge
	GRPC   App = "grpc"  // gRPC (HTTP/2)
	A2A    App = "a2a"   // A2A: JSON-RPC 2.0 over HTTP
	MCP    App = "mcp"   // MCP: JSON-RPC 2.0 over HTTP (streamable HTTP)
)

// By is how a decision was made.
type By string

// Ways of deciding.
const (
	ByDeclared     By = "declared"     // the Service port's appProtocol or the annotation
	BySniff        By = "sniffed"      // the client's first bytes
	ByOpaquePort   By = "opaque_port"  // a port that is opaque unless declared
	ByTimeout      By = "timeout"      // the client sent nothing in time
	ByNotSniffed   By = "not_sniffed"  // sniffing is off, or the destination is outside the mesh
	ByInconclusive By = "inconclusive" // the client ended or the look hit its limit before a decision
)

// Declared maps a Service port's appProtocol to an App. Empty: nothing
// declared (false). Values are those of Kubernetes (IANA service names and
// kubernetes.io/ prefixed ones), Istio's aliases, and agentmesh.io/a2a and
// agentmesh.io/mcp; anything else declared (tcp, https, tls, mysql, ...)
// is Opaque: the user said what it is and it is not something ztunnel
// reads.
func Declared(appProtocol string) (App, bool) {
	if appProtocol == "" {
		return "", false
	}
	switch strings.ToLower(appProtocol) {
	case "http", "http1", "http/1.1", "kubernetes.io/ws":
		return HTTP1, true
	case "kubernetes.io/h2c", "h2c", "http2":
		return HTTP2, true
	case "grpc", "grpc-web":
		return GRPC, true
	case "agentmesh.io/a2a", "a2a":
		return A2A, true
	case "agentmesh.io/mcp", "mcp":
		return MCP, true
	}
	return Opaque, true
}

// MaxSniff bounds the bytes Sniff looks at: an HTTP/1.x request line must
// end within it (longer ones are Opaque, like the 8 KiB request-line limit
// common in HTTP servers).
const MaxSniff = 8 << 10

// preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Sniff decides from b, the first bytes a client sent, whether they are
// HTTP/1.x or HTTP/2 with prior knowledge. done is false while b is a
// proper prefix of something Sniff would recognise (more bytes are
// needed); then app is Opaque, what to take if no more come.
func Sniff(b []byte) (app App, done bool) {
	if len(b) == 0 {
		return Opaque, false
	}
	if n := min(len(b), len(preface)); string(b[:n]) == preface[:n] {
		if n == len(preface) {
			return HTTP2, true
		}
		return Opaque, false
	}
	return sniffRequestLine(b)
}

// methods are the request methods Sniff recognises: those of RFC 9110
// and PATCH, and WebDAV's. A client whose first bytes begin with anything
// else is decided at once (Opaque) instead of waiting for more bytes: a
// short first message like "hello" must not wait for a request line.
var methods = []string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
}

// sniffRequestLine recognises an HTTP/1.x request line (RFC 9112 section
// 3): method SP request-target SP HTTP/1.DIGIT CRLF.
func sniffRequestLine(b []byte) (App, bool) {
	if len(b) > MaxSniff {
		b = b[:MaxSniff]
	}
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		// A method so far: more is needed if it begins one.
		for _, m := range methods {
			if len(b) <= len(m) && m[:len(b)] == string(b) {
				return Opaque, false
			}
		}
		return Opaque, true
	}
	if !slices.Contains(methods, string(b[:i])) {
		return Opaque, true
	}
	// request-target: visible ASCII, no spaces (origin, absolute,
	// authority or asterisk form).
	j := i + 1
	for j < len(b) && b[j] > ' ' && b[j] < 0x7f {
		j++
	}
	switch {
	case j == len(b):
		return Opaque, len(b) == MaxSniff
	case j == i+1 || b[j] != ' ':
		return Opaque, true
	}
	// HTTP-version CRLF.
	rest := b[j+1:]
	const version = "HTTP/1.x\r\n"
	for k := 0; k < len(rest) && k < len(version); k++ {
		c := rest[k]
		switch {
		case k == 7:
			if c < '0' || c > '9' {
				return Opaque, true
			}
		case c != version[k]:
			return Opaque, true
		}
	}
	if len(rest) < len(version) {
		return Opaque, len(b) == MaxSniff
	}
	return HTTP1, true
}

// DefaultOpaquePorts are destination ports taken as Opaque unless the
// Service port declares a protocol: protocols where the server speaks
// first (SMTP 25 and 587, MySQL 3306, 4444 (Galera), 11211 memcached) or
// clients that open idle, and PostgreSQL 5432, Redis 6379 and
// Elasticsearch transport 9300, whose first bytes are never HTTP. Waiting
// for a client that waits for the server would stall those connections
// until the sniff timeout.
var DefaultOpaquePorts = []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211}
