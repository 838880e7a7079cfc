package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// MTLSModeAnnotation, on a namespace or a pod, sets the mTLS mode of its
// pods (a pod's value overrides its namespace's).
const MTLSModeAnnotation = "agentmesh.io/mtls-mode"

// DefaultActionAnnotation, on a namespace, sets what happens to connections
// to its pods that no Allow policy selects: Allow (default) or Deny.
const DefaultActionAnnotation = "agentmesh.io/default-action"

// MTLSMode says whether a pod accepts plaintext connections.
type MTLSMode string

const (
	// MTLSStrict refuses plaintext connections.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts plaintext connections and authorizes them by
	// source address only (they carry no identity).
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// ParseMTLSMode reads an agentmesh.io/mtls-mode value; "" is PERMISSIVE,
// the default, so that enrolling a namespace never cuts off its clients
// outside the mesh until someone asks for STRICT.
func ParseMTLSMode(s string) (MTLSMode, error) {
	switch m := MTLSMode(s); m {
	case "":
		return MTLSPermissive, nil
	case MTLSStrict, MTLSPermissive:
		return m, nil
	}
	return "", fmt.Errorf("mtls mode %q: want STRICT or PERMISSIVE", s)
}

// ParseDefaultAction reads an agentmesh.io/default-action value; "" is Allow.
func ParseDefaultAction(s string) (Action, error) {
	switch a := Action(s); a {
	case "":
		return ActionAllow, nil
	case ActionAllow, ActionDeny:
		return a, nil
	}
	return "", fmt.Errorf("default action %q: want Allow or Deny", s)
}

// AppProtocolsAnnotation, on a Service, declares the application protocol
// of some of its ports where their appProtocol field cannot be set (a
// chart someone else maintains): a comma-separated list of
// <port name or number>=<protocol>, e.g. "8080=agentmesh.io/mcp,metrics=http".
// An entry overrides the port's appProtocol. Protocols are appProtocol
// values: http, kubernetes.io/h2c, grpc, agentmesh.io/a2a,
// agentmesh.io/mcp, or tcp (or any other) for bytes ztunnel must not read.
const AppProtocolsAnnotation = "agentmesh.io/app-protocols"

// ParseAppProtocols reads an agentmesh.io/app-protocols value into port
// (name or number) -> protocol. Malformed entries are left out and named
// in the error; the well-formed ones are returned all the same.
func ParseAppProtocols(s string) (map[string]string, error) {
	out := map[string]string{}
	var bad []string
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		port, proto, ok := strings.Cut(entry, "=")
		port, proto = strings.TrimSpace(port), strings.TrimSpace(proto)
		if !ok || port == "" || proto == "" || strings.ContainsFunc(port+proto, unicode.IsSpace) || len(proto) > 256 {
			bad = append(bad, strconv.Quote(entry))
			continue
		}
		out[port] = proto
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("app protocols: malformed %s: want <port name or number>=<protocol>, comma-separated", strings.Join(bad, ", "))
	}
	return out, nil
}
