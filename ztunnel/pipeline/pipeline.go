// Package pipeline is one proxied connection from start to end, read top
// to bottom: each accepted connection becomes a flow.Flow that passes
// through the stages, each in its own package:
//
//	podnet     accept (the pod's listeners; the root starts the goroutine)
//	classify   outbound | inbound HBONE | inbound plaintext; original destination
//	resolve    addresses -> workloads and identities; HBONE or passthrough
//	detect     what the bytes are: opaque TCP, or HTTP of some kind
//	l7         HTTP served and forwarded request by request (http.go)
//	authorize  destination side: peer identity, AgentPolicy, live connections
//	transport  the upstream: HBONE client or plain TCP, the app in the pod;
//	           between two pods of this node the app itself (Local)
//	relay      the one copy loop
//	record     the access line and the metrics
//
// The three entry points are the three listeners of a pod: Outbound,
// Plaintext and HBONE. They return when the connection is done; the
// caller owns the goroutine and closes the accepted conn after.
package pipeline

import (
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/resolve"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// Pipeline holds the stages.
type Pipeline struct {
	Log   *slog.Logger
	Index func() *meshconfig.Index // the config in force
	// ConfigChanged is closed when the config in force is replaced.
	ConfigChanged func() <-chan struct{}
	OrigDst       classify.OrigDst
	Resolve       *resolve.Resolver
	// Detect decides the application protocol of outbound flows (nil:
	// none is decided).
	Detect *detect.Detector
	// HTTP proxies the HTTP flows detect names request by request
	// (outboundHTTP); off, they take the L4 path as opaque bytes.
	HTTP bool
	// Tracer makes a span per request proxied per request (nil: none).
	Tracer    trace.TracerProvider
	Authorize *authorize.Authorizer
	Transport *transport.Transport
	Limits    *limits.Limits
	Record    *record.Recorder
	// HBONE serves the CONNECT streams of inbound mTLS connections.
	HBONEServer *hbone.Server

	budgets  sync.Map // service namespace/name -> *retryBudget
	breakers gauges   // circuit breakers' counts
	limiters limiters // rate limits' buckets
	// ServerTLS gives the server TLS config of a pod's HBONE listener.
	ServerTLS ServerCerts
	// HandshakeTimeout bounds inbound TLS handshakes.
	HandshakeTimeout time.Duration

	serviceWarn logLimit // one refused-service line per service per second
	suspectWarn logLimit // one suspicious-plaintext line per source address per second
}
