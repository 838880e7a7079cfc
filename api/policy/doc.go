// Package policy decides whether a connection to a workload is allowed, from
// the AgentPolicies that select it (agentmesh.io/v1alpha1) in compiled form.
// It is pure: no I/O, no clock, no locks, and no Kubernetes imports, so the
// node components stay small; the controller compiles policies
// (controller/compile, with a resolver for the selectors) and ztunnel
// evaluates them (Evaluate) for every inbound connection.
//
// Semantics, for one target and one connection (Evaluate):
//   - no policy data for the target yet: deny (fail closed);
//   - plaintext from the target's own node to one of its probe ports (the
//     kubelet's readiness, liveness and startup probes): allow;
//   - plaintext to a STRICT target: deny;
//   - any matching Deny rule: deny;
//   - no Allow policy selects the target: the namespace default;
//   - otherwise: allow if some Allow rule matches, else deny.
//
// A rule with L7 parts (http, jsonrpc, mcp) is decided per request where
// the connection's requests are seen (EvaluateRequest; Admissible first
// tells whether any request could be allowed, NeedsRequests whether the
// requests matter at all). Where they are not (Evaluate: opaque bytes),
// it is checked at L4 only: under Allow it matches nothing, under Deny it
// matches without its L7 part, so the result is never more permissive
// than the policy. Identity fields
// (service accounts, namespaces) match only a verified peer identity, never
// a plaintext connection.
package policy
