// Package detect is the seam where ztunnel will tell what a flow carries.
// Today every flow is Opaque: its bytes are copied as they are on the L4
// path (transport, then relay). The L7 work adds here the protocol choice
// (the Service port's appProtocol, else a short bounded sniff for HTTP/1.x
// and HTTP/2 prior knowledge on client-first ports; TLS started by the app
// stays opaque), and the pipeline then takes the per-request path (route,
// balance, retry, time out) for HTTP, gRPC, A2A and MCP.
package detect

import "github.com/agentmesh/agentmesh/ztunnel/flow"

// App is what a flow's bytes are, as far as ztunnel handles them.
type App int

// Apps.
const (
	Opaque App = iota // copied as they are
)

// Detect decides how f's bytes are handled.
func Detect(*flow.Flow) App { return Opaque }
