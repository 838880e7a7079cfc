// Package debug holds the JSON documents of the controller's debug
// endpoints, for clients such as meshctl.
package debug

import "github.com/agentmesh/agentmesh/api/meshconfig"

// WorkloadPath is the endpoint on the controller's admin HTTP server that
// describes one pod: GET /debug/workload?pod=<namespace>/<name>. It
// answers 404 when the pod is not in the controller's current view and
// 400 when the pod parameter is malformed.
const WorkloadPath = "/debug/workload"

// ServicePath is the endpoint on the controller's admin HTTP server that
// shows one Service as the nodes get it, its routes (HTTPRoutes and
// GRPCRoutes whose parent it is, flattened in precedence order) and its
// traffic (the TrafficPolicy that applies to it, defaults filled in)
// included:
// GET /debug/service?service=<namespace>/<name>, answered with a
// meshconfig.Service. It answers 404 when the Service is not in the
// controller's current view and 400 when the service parameter is
// malformed.
const ServicePath = "/debug/service"

// Workload is the answer of WorkloadPath.
type Workload struct {
	// Workload is the pod as the current view has it, with its Authz (the
	// policies enforced for it, its mTLS mode and its namespace default).
	Workload meshconfig.Workload `json:"workload"`
	// Identity is the pod's SPIFFE id.
	Identity string `json:"identity"`
	// Node is the node the pod runs on (the only one that gets its Authz).
	Node string `json:"node"`
	// Policies are the AgentPolicies that select the pod, in Authz order.
	Policies []Policy `json:"policies"`
}

// Policy is one AgentPolicy selecting the pod, with its Accepted
// condition as the controller's cache has it.
type Policy struct {
	// Name is namespace/name.
	Name string `json:"name"`
	// Action is the action enforced: the spec's, or Deny for an invalid
	// policy enforced as a Deny of everything.
	Action string `json:"action"`
	// Accepted is the condition's status: True, False or Unknown (no
	// status written yet).
	Accepted string `json:"accepted"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
}
