// Package v1alpha1 is the agentmesh.io/v1alpha1 API: the AgentPolicy custom
// resource (namespaced), which authorizes connections to agents by the
// caller's identity, namespace, pod or address, NetworkPolicy-like; and
// the TrafficPolicy custom resource (namespaced), which sets how requests
// to the Services it targets (spec.targetRefs, Gateway API policy
// attachment) are balanced, timed out, retried, broken off and rate
// limited (controller/traffic turns it into the data plane's model).
//
// Semantics, for one target pod and one connection: any matching Deny rule
// denies; if no Allow policy selects the target, the namespace default
// applies; otherwise some Allow rule must match. A rule with L7 fields (http,
// jsonrpc, mcp) is not enforced at L7 yet: under Allow it matches nothing,
// under Deny it is enforced without its L7 part (so it denies more, never
// less), and the policy's Accepted condition says so (reason
// L7FieldsNotEnforced).
//
// mTLS mode is not part of this API: it is set per namespace and per pod by
// the annotation agentmesh.io/mtls-mode (MTLSModeAnnotation) with value
// STRICT (plaintext connections to the pod are refused) or PERMISSIVE
// (plaintext connections are authorized by their source address only). A
// pod's annotation overrides its namespace's; without either, PERMISSIVE (the default).
// The namespace default for pods no Allow policy selects is set by the
// namespace annotation agentmesh.io/default-action (DefaultActionAnnotation)
// with value Allow (the default) or Deny.
//
// +kubebuilder:object:generate=true
// +groupName=agentmesh.io
package v1alpha1
