package policy

import (
	"net/netip"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Action is what a policy does with the connections its rules match. The
// values are those of the AgentPolicy CRD's spec.action.
type Action string

// Actions.
const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
)

// MTLSMode says whether a workload accepts plaintext; the values are those
// of the agentmesh.io/mtls-mode annotation.
type MTLSMode string

// mTLS modes.
const (
	MTLSStrict     MTLSMode = "STRICT"
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// Policy is a compiled AgentPolicy.
type Policy struct {
	// Namespace and Name identify the AgentPolicy.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Action is Allow or Deny.
	Action Action `json:"action"`
	// Rules, in spec order; Rule.Index is the spec index.
	Rules []Rule `json:"rules,omitempty"`
}

// Rule is a compiled spec.rules[i]: it matches when the peer matches some
// From entry (or From is empty) and the port some Ports entry (or Ports is
// empty).
type Rule struct {
	// Index is the rule's position in spec.rules.
	Index int `json:"index"`
	// From are alternative peers; empty means any peer.
	From []Peer `json:"from,omitempty"`
	// Ports are destination port ranges; empty means any port.
	Ports []PortRange `json:"ports,omitempty"`
	// L7 is set when the rule has http, jsonrpc or mcp fields (HTTP,
	// JSONRPC, MCP; compiled by controllers that enforce them).
	L7 bool `json:"l7,omitempty"`
	// HTTP, JSONRPC and MCP are the rule's L7 parts (nil: not
	// constrained); every present part must match a request (see
	// EvaluateRequest).
	HTTP    *HTTPMatch    `json:"http,omitempty"`
	JSONRPC *JSONRPCMatch `json:"jsonrpc,omitempty"`
	MCP     *MCPMatch     `json:"mcp,omitempty"`
}

// HTTPMatch matches an HTTP request: its method is one of Methods and its
// path one of Paths (exact, or a prefix when the entry ends in "*"); an
// empty list matches any.
type HTTPMatch struct {
	Methods []string `json:"methods,omitempty"`
	Paths   []string `json:"paths,omitempty"`
}

// JSONRPCMatch matches a JSON-RPC 2.0 call whose method is one of Methods
// (empty: any call); a request that carries no JSON-RPC call does not
// match.
type JSONRPCMatch struct {
	Methods []string `json:"methods,omitempty"`
}

// MCPMatch matches Model Context Protocol tool calls: a tools/call whose
// params.name is one of Tools (empty: any tool). A request that calls no
// tool (initialize, tools/list, notifications, the event stream's GET)
// matches an Allow rule's MCP part, so that the session works, and no
// Deny rule's.
type MCPMatch struct {
	Tools []string `json:"tools,omitempty"`
}

// Request is what EvaluateRequest knows of one HTTP request.
type Request struct {
	Method, Path string
	// RPC is the JSON-RPC call the body carries (one element of a batch),
	// nil when it carries none.
	RPC *Call
	// MCPStream marks a request without a body call that belongs to an
	// MCP session: a GET asking for the event stream (Accept:
	// text/event-stream) or a DELETE ending a session (Mcp-Session-Id).
	MCPStream bool
}

// Call is one JSON-RPC call: its method and, for MCP's tools/call, the
// tool (params.name).
type Call struct {
	Method, Tool string
}

// HasL7 reports whether r has an L7 part.
func (r *Rule) HasL7() bool { return r.HTTP != nil || r.JSONRPC != nil || r.MCP != nil }

// Peer is a compiled spec.rules[i].from[j]: every constrained attribute
// must match. Its JSON form (peerjson.go) writes an unconstrained set as an
// absent field and a constrained one as a sorted list.
type Peer struct {
	// Identities are the SPIFFE ids of the allowed service accounts.
	Identities Set[spiffe.ID]
	// Namespaces constrain the namespace of the peer's identity
	// (namespaces and namespaceSelector, resolved and intersected).
	Namespaces Set[string]
	// Workloads are the UIDs of the source workloads a podSelector picks.
	Workloads Set[string]
	// IPBlocks constrain the source address; empty means any address.
	IPBlocks []IPBlock
}

// IPBlock is a prefix minus the prefixes in Except.
type IPBlock struct {
	Prefix netip.Prefix   `json:"prefix"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// PortRange is the destination ports From..To, inclusive.
type PortRange struct {
	From uint16 `json:"from"`
	To   uint16 `json:"to"`
}

// Target is what applies to one destination workload.
type Target struct {
	// Policies are the compiled policies whose podSelector selects the
	// workload (both actions, any order).
	Policies []Policy `json:"policies,omitempty"`
	// PolicyRefs name policies ("namespace/name") kept elsewhere: the
	// controller's stream sends each policy body once per node
	// (meshconfig.Config.Policies) and every target refers to it; the node
	// resolves the references into Policies before it evaluates.
	PolicyRefs []string `json:"policyRefs,omitempty"`
	// MTLSMode is the workload's mode; only STRICT refuses plaintext (unset is
	// PERMISSIVE, the default).
	MTLSMode MTLSMode `json:"mtlsMode"`
	// Default is the namespace's action when no Allow policy selects the
	// workload; anything but Deny is Allow.
	Default Action `json:"default"`
	// ProbePorts are the ports the kubelet probes (readiness, liveness,
	// startup), sorted: plaintext from the workload's own node to one of
	// them is admitted whatever the policies and the mTLS mode say.
	ProbePorts []uint16 `json:"probePorts,omitempty"`
}

// Conn is the connection to authorize.
type Conn struct {
	// MTLS is set when the peer presented a verified certificate.
	MTLS bool
	// Identity is the peer's verified SPIFFE id; zero when plaintext.
	Identity spiffe.ID
	// Workload is the UID of the workload that owns Addr in the mesh
	// config, or "" when none does. For an mTLS connection the caller sets
	// it only if that workload's identity is Identity.
	Workload string
	// Addr is the source address (IPv4-mapped IPv6 is unmapped).
	Addr netip.Addr
	// FromNode is set when Addr is one of the destination node's own
	// addresses: the connection comes from the node itself (the kubelet).
	FromNode bool
	// Port is the destination port.
	Port uint16
}

// Key is "namespace/name", the name PolicyRefs use.
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }
