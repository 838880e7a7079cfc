// Package debug holds the JSON documents of ztunnel's admin debug
// endpoints, for clients such as meshctl; it imports nothing heavy.
package debug

import (
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"

	"github.com/agentmesh/agentmesh/api/policy"
)

// AuthzPath is the admin endpoint that evaluates a connection with the
// config in force: GET /debug/authz?from=<ns/pod|ip>&to=<ns/pod>&port=<n>.
const AuthzPath = "/debug/authz"

// Authz is the answer of AuthzPath: what the node's policy
// decides for a connection from From to To on Port, with the config in
// force.
type Authz struct {
	// Node is this ztunnel's node, when it knows it.
	Node string    `json:"node,omitempty"`
	From AuthzPeer `json:"from"`
	To   AuthzDest `json:"to"`
	Port uint16    `json:"port"`
	// MTLSMode is the target's mode (STRICT or PERMISSIVE); "" when the
	// node has no policy data for it.
	MTLSMode policy.MTLSMode `json:"mtlsMode"`
	// Default is the target namespace's action (Allow or Deny); "" when
	// the node has no policy data.
	Default policy.Action `json:"default"`
	// Policies are the policies selecting the target, "namespace/name".
	Policies []string `json:"policies"`
	// ProbePorts are the target's kubelet probe ports, which admit
	// plaintext from the node's own addresses.
	ProbePorts []uint16      `json:"probePorts,omitempty"`
	Decision   AuthzDecision `json:"decision"`
}

// AuthzPeer is the source of a checked connection: an enrolled
// workload connects with mTLS as its identity, anything else in plaintext
// from its address.
type AuthzPeer struct {
	Workload string     `json:"workload"` // namespace/name, "" if none owns Addr
	Identity string     `json:"identity"` // SPIFFE id, "" for plaintext
	Addr     netip.Addr `json:"addr"`
	MTLS     bool       `json:"mtls"`
	// Node is set when Addr is one of the node's own addresses (the
	// kubelet's probes come from them).
	Node bool `json:"node,omitempty"`
	// Impostor names the mesh pod owning Addr when the connection is
	// plaintext: a mesh pod never sends plaintext to a mesh pod, so the
	// address is not taken as that pod's (Workload stays empty).
	Impostor string `json:"impostor,omitempty"`
}

// AuthzDest is the destination workload of a checked connection.
type AuthzDest struct {
	Workload string     `json:"workload"` // namespace/name
	UID      string     `json:"uid"`
	Addr     netip.Addr `json:"addr"`
}

// AuthzDecision is policy.Decision on the wire.
type AuthzDecision struct {
	Allow  bool          `json:"allow"`
	Reason policy.Reason `json:"reason"`
	Policy string        `json:"policy"` // namespace/name, "" unless a rule decided
	Rule   int           `json:"rule"`   // index in spec.rules, -1 unless a rule decided
}

// ServicesPath is the admin endpoint that shows the Services this node
// knows with their endpoints and the balancer's state of each:
// GET /debug/services[?service=<namespace>/<name>] answers []Service.
const ServicesPath = "/debug/services"

// Service is a Service as this node's tunnel routes it.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	VIPs      []netip.Addr  `json:"vips"`
	Ports     []ServicePort `json:"ports"`
	Endpoints []Endpoint    `json:"endpoints"`
	// Routes are the Service's routes in the order a request tries them
	// (GAMMA HTTPRoute/GRPCRoute rules, one per match).
	Routes []Route `json:"routes,omitempty"`
	// Traffic is the TrafficPolicy in force, nil: the defaults.
	Traffic *meshconfig.TrafficPolicy `json:"traffic,omitempty"`
}

// Route is one route of a Service: its object and rule, what it
// matches (Match, a summary), where it sends requests with what weight,
// its timeouts and retry.
type Route struct {
	Name     string               `json:"name"`
	Kind     string               `json:"kind,omitempty"`
	Rule     int                  `json:"rule"`
	Port     uint16               `json:"port,omitempty"`
	Match    string               `json:"match"`
	Backends []meshconfig.Backend `json:"backends"`
	Timeout  string               `json:"timeout,omitempty"`
	Backend  string               `json:"backendTimeout,omitempty"`
	Retry    *meshconfig.Retry    `json:"retry,omitempty"`
}

// ServicePort is a port of a Service and where it goes: TargetPort is a
// number, or a port name resolved per endpoint.
type ServicePort struct {
	Name        string `json:"name,omitempty"`
	Port        uint16 `json:"port"`
	TargetPort  string `json:"targetPort"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one backend of a Service with the balancer's state of it on
// this node.
type Endpoint struct {
	// Workload is the backing pod (namespace/name), "" for an endpoint
	// that is no pod the mesh knows.
	Workload string `json:"workload,omitempty"`
	// Identity is the SPIFFE id its certificate must carry, "" when it is
	// outside the mesh (reached in plain TCP).
	Identity string            `json:"identity,omitempty"`
	Addrs    []netip.Addr      `json:"addrs"`
	Ports    map[string]uint16 `json:"ports,omitempty"` // named target ports
	Ready    bool              `json:"ready"`
	// Mesh says connections go over HBONE (mTLS) to it.
	Mesh bool `json:"mesh"`
	// EWMAMillis is the peak-EWMA of connect latency, milliseconds.
	EWMAMillis float64 `json:"ewmaMillis"`
	// Open is the connections this node has open to it.
	Open     int64  `json:"open"`
	Picks    uint64 `json:"picks"`
	Failures uint64 `json:"failures"`
	// Ejected says outlier detection keeps requests from it (or it is on
	// probation after an ejection).
	Ejected bool `json:"ejected,omitempty"`
}

// RequestsPath is the admin endpoint that lists the last HTTP requests
// this node's tunnel proxied per request (each counted in
// agentmesh_requests_total), newest first:
// GET /debug/requests[?workload=<namespace>/<name>][&limit=<n>] answers
// Requests. workload matches a request whose source or destination is
// that workload (its Deployment, StatefulSet, ... or its pod).
const RequestsPath = "/debug/requests"

// Requests is the answer of RequestsPath.
type Requests struct {
	// Node is this ztunnel's node, when it knows it.
	Node string `json:"node,omitempty"`
	// Capacity is how many requests the node keeps (ztunnel
	// --recent-requests); 0: it keeps none.
	Capacity int `json:"capacity"`
	// Requests are newest first.
	Requests []Request `json:"requests"`
}

// Request is one HTTP request proxied per request, as the reporter's
// tunnel recorded it (its "msg":"request" line).
type Request struct {
	// Time is when it ended (the response's end, or the tunnel's own
	// answer).
	Time time.Time `json:"time"`
	// Node is the reporter's node, when it knows it.
	Node string `json:"node,omitempty"`
	// Reporter is source (the caller's tunnel) or destination (the
	// callee's).
	Reporter    string      `json:"reporter"`
	Source      RequestPeer `json:"source"`
	Destination RequestPeer `json:"destination"`
	// Service is the Service the caller addressed (namespace/name; known
	// to the source only).
	Service string `json:"service,omitempty"`
	// Protocol is http1, http2, grpc, a2a or mcp, when known.
	Protocol  string `json:"protocol,omitempty"`
	Method    string `json:"method"`
	Authority string `json:"authority"`
	Path      string `json:"path"`
	// Status is what the app got, 0 when nothing went out.
	Status int `json:"status"`
	// Result is "ok", or why the tunnel answered itself.
	Result         string  `json:"result"`
	DurationMillis float64 `json:"durationMs"`
	// Attempts are the endpoints tried (source, to a Service only).
	Attempts  int    `json:"attempts,omitempty"`
	A2AMethod string `json:"a2aMethod,omitempty"`
	MCPMethod string `json:"mcpMethod,omitempty"`
	MCPTool   string `json:"mcpTool,omitempty"`
	// TraceID and SpanID are the request's span in the reporter's
	// tunnel, when traced.
	TraceID string `json:"traceId,omitempty"`
	SpanID  string `json:"spanId,omitempty"`
}

// RequestPeer is one end of a recorded request; a field the tunnel did
// not know is empty.
type RequestPeer struct {
	// Workload is namespace/name of what runs the pod (its Deployment,
	// StatefulSet, ...; the pod's own name otherwise), as in the
	// agentmesh_* metrics' workload labels.
	Workload string `json:"workload,omitempty"`
	// Pod is namespace/name of the pod.
	Pod      string `json:"pod,omitempty"`
	Identity string `json:"identity,omitempty"` // SPIFFE id
}
