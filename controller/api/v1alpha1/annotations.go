package v1alpha1

import "fmt"

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
