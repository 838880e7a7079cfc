package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Action is what a policy does with the connections its rules match.
// +kubebuilder:validation:Enum=Allow;Deny
type Action string

const (
	// ActionAllow lets matching connections through; once any Allow policy
	// selects a pod, connections no Allow rule matches are refused.
	ActionAllow Action = "Allow"
	// ActionDeny refuses matching connections, whatever Allow policies say.
	ActionDeny Action = "Deny"
)

// AgentPolicy authorizes connections to the pods it selects.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=ap,categories=agentmesh
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AgentPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentPolicySpec   `json:"spec"`
	Status AgentPolicyStatus `json:"status,omitempty"`
}

// AgentPolicySpec selects target pods and says which connections to them
// are allowed or denied.
//
// +kubebuilder:validation:XValidation:rule="self.action != 'Deny' || !has(self.rules) || self.rules.all(r, has(r.from) || has(r.ports))",fieldPath=".rules",message="a Deny rule needs from or ports: a rule with neither would deny every connection to the selected pods (to refuse everything, use an Allow policy with no rules)"
type AgentPolicySpec struct {
	// PodSelector picks the target pods in the policy's namespace; empty
	// selects every pod of the namespace.
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// Action is Allow or Deny.
	Action Action `json:"action"`
	// Rules match connections; a connection matches the policy when any
	// rule matches it. An Allow policy without rules allows nothing.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Rules []Rule `json:"rules,omitempty"`
}

// Rule matches a connection when its source matches some entry of From and
// its destination port some entry of Ports (an absent list matches all).
type Rule struct {
	// From lists the allowed (or denied) sources; absent means any source.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	From []Source `json:"from,omitempty"`
	// Ports lists destination ports; absent means any port.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Ports []Port `json:"ports,omitempty"`
	// HTTP narrows the rule to HTTP requests (decided per request).
	// +optional
	HTTP *HTTPMatch `json:"http,omitempty"`
	// JSONRPC narrows the rule to JSON-RPC calls (decided per request).
	// +optional
	JSONRPC *JSONRPCMatch `json:"jsonrpc,omitempty"`
	// MCP narrows the rule to MCP tool calls (decided per request).
	// +optional
	MCP *MCPMatch `json:"mcp,omitempty"`
}

// Source is one kind of caller. Every field set must match (AND); within a
// field any value may match (OR). serviceAccounts match the caller's
// verified SPIFFE identity, and so do namespaces and namespaceSelector
// without podSelector: they never match plaintext callers. With
// podSelector, the namespace fields only say where the pods are (default:
// the policy's namespace), and pods are matched by source address.
//
// +kubebuilder:validation:XValidation:rule="has(self.serviceAccounts) || has(self.namespaces) || has(self.namespaceSelector) || has(self.podSelector) || has(self.ipBlocks)",message="a from entry must set at least one of serviceAccounts, namespaces, namespaceSelector, podSelector, ipBlocks"
type Source struct {
	// ServiceAccounts are "name" (in the policy's namespace) or
	// "namespace/name".
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:items:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-.a-z0-9]*[a-z0-9])?$`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Namespaces are namespace names.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector matches namespaces by label.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// PodSelector matches source pods by label, in the namespaces the
	// namespace fields pick, else in the policy's namespace.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// IPBlocks match the source address.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	IPBlocks []IPBlock `json:"ipBlocks,omitempty"`
}

// IPBlock is a CIDR minus some CIDRs inside it.
//
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || !has(self.except) || self.except.all(e, !isCIDR(e) || cidr(self.cidr).containsCIDR(e))",message="every except must lie within cidr"
type IPBlock struct {
	// CIDR is an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IP prefix such as 10.0.0.0/8 or fd00::/64"
	CIDR string `json:"cidr"`
	// Except are prefixes inside CIDR that do not match.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="except must be an IP prefix such as 10.1.0.0/16"
	Except []string `json:"except,omitempty"`
}

// Protocol is a transport protocol; only TCP is meshed.
// +kubebuilder:validation:Enum=TCP
type Protocol string

// ProtocolTCP is TCP.
const ProtocolTCP Protocol = "TCP"

// Port is a destination port or port range.
//
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must be greater than or equal to port"
type Port struct {
	// Port is the destination port (1-65535), or the first of a range.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// EndPort, if set, makes Port..EndPort (inclusive) a range.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort *int32 `json:"endPort,omitempty"`
	// Protocol is TCP (the default).
	// +optional
	// +kubebuilder:default=TCP
	Protocol Protocol `json:"protocol,omitempty"`
}

// HTTPMatch matches HTTP requests (L7).
type HTTPMatch struct {
	// Methods are HTTP methods such as GET; absent means any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=32
	Methods []string `json:"methods,omitempty"`
	// Paths are URL paths, exact or ending in "*" for a prefix.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	Paths []string `json:"paths,omitempty"`
}

// JSONRPCMatch matches JSON-RPC calls (L7).
type JSONRPCMatch struct {
	// Methods are JSON-RPC method names; absent means any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	Methods []string `json:"methods,omitempty"`
}

// MCPMatch matches Model Context Protocol tool calls (L7): tools/call
// requests whose params.name is listed; requests that call no tool match an
// Allow rule's mcp part and no Deny rule's.
type MCPMatch struct {
	// Tools are MCP tool names; absent means any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	Tools []string `json:"tools,omitempty"`
}

// UsesL7 reports whether r has L7 fields.
func (r *Rule) UsesL7() bool { return r.HTTP != nil || r.JSONRPC != nil || r.MCP != nil }

// AgentPolicyStatus is the controller's view of the policy.
type AgentPolicyStatus struct {
	// Conditions: Accepted.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionAccepted is True when the policy is valid and being enforced
// (possibly partly; see the reasons).
const ConditionAccepted = "Accepted"

// Reasons of the Accepted condition.
const (
	// ReasonAccepted: enforced as written.
	ReasonAccepted = "Accepted"
	// ReasonL7FieldsNotEnforced: accepted, but rules with L7 fields are
	// enforced at L4 only (Allow: they match nothing; Deny: without the L7
	// part). Written by controllers before L7 enforcement; no longer set.
	ReasonL7FieldsNotEnforced = "L7FieldsNotEnforced"
	// ReasonInvalid: the policy could not be compiled (Accepted=False).
	ReasonInvalid = "Invalid"
)

// AgentPolicyList is a list of AgentPolicy.
//
// +kubebuilder:object:root=true
type AgentPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentPolicy `json:"items"`
}
