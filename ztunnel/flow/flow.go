// Package flow is the vocabulary of ztunnel's pipeline: a Pod as the
// stages see it, and the Flow, the one value each proxied connection is
// while it passes through them (accept, classify, resolve, detect,
// authorize, transport, copy) and that record writes once it ended.
package flow

import (
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Direction is which way a flow goes through this node, as seen from the
// pod it serves.
type Direction string

// Directions.
const (
	Outbound Direction = "outbound" // the pod opened it
	Inbound  Direction = "inbound"  // it reaches the pod
)

// Protocol is how a flow crosses the network.
type Protocol string

// Protocols.
const (
	HBONE       Protocol = "hbone"       // mTLS HTTP/2 CONNECT between node tunnels
	Plaintext   Protocol = "plaintext"   // inbound from outside the mesh
	Passthrough Protocol = "passthrough" // outbound to a destination outside the mesh
	// Local joins two pods of this node inside the tunnel (the same-node
	// fast path): no network is crossed, the node itself knows both
	// identities, so there is neither TLS nor HTTP/2; policy and records
	// are those of HBONE.
	Local Protocol = "local"
)

// Flow is one proxied connection. Each stage fills in what it learns; a
// field nobody set stays zero.
type Flow struct {
	Direction Direction
	Protocol  Protocol
	Start     time.Time

	// Src and Dst are the connection's ends: the app's address and its
	// original destination (outbound), the peer and the pod's address
	// (inbound).
	Src, Dst                 netip.AddrPort
	SrcWorkload, DstWorkload *meshconfig.Workload
	SrcID, DstID             spiffe.ID
	MTLS                     bool

	// Service is the Service whose virtual IP the app connected to, and
	// ServicePort the port it asked for (outbound only; nil otherwise).
	// Upstream is then the endpoint the connection went to (Dst stays the
	// VIP), DstWorkload its pod, and Attempts the connects it took.
	Service     *meshconfig.Service
	ServicePort *meshconfig.ServicePort
	Upstream    netip.AddrPort
	Attempts    int

	// AppProtocol is what the flow carries as far as ztunnel can tell
	// (package detect: tcp, http1, http2, grpc, a2a, mcp), and Detected
	// how that was decided (declared, sniffed, timeout, ...); outbound
	// flows, and inbound ones whose source tunnel said it proxies them
	// per request; "" elsewhere.
	AppProtocol, Detected string
	// PerRequest: the source tunnel proxies the flow request by request
	// (outbound; its upstream streams carry HTTP the tunnel writes).
	PerRequest bool

	// TCPLabels are the flow's label values of the agentmesh_tcp_*
	// metrics, set by record when the flow connected (nil before, or
	// when it never did).
	TCPLabels []string

	// Sent is what the opener sent, Received what it got back.
	Sent, Received int64
	// Requests is the HTTP requests of a flow proxied per request.
	Requests int
	Err      error
	// Authz is the decision that refused or closed the flow, or admitted
	// it as a kubelet probe (what the access line names); nil otherwise.
	Authz *policy.Decision
}

// New starts a flow.
func New(d Direction, p Protocol, src, dst netip.AddrPort) *Flow {
	return &Flow{Direction: d, Protocol: p, Src: src, Dst: dst, Start: time.Now()}
}
