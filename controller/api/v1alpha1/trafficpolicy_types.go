package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TrafficPolicy says how requests to the Services it targets are balanced
// and guarded: what Gateway API routes lack (balancing algorithm, session
// affinity, connect/first-byte/idle timeouts, retry budget, circuit
// breaking, outlier detection, rate limits). A section left out keeps the
// mesh's built-in behaviour; a field left out of a present section takes
// the default its comment names. When several TrafficPolicies target one
// Service, the oldest applies (then the first by name) and the others are
// Accepted=False with reason Conflicted.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=tp,categories=agentmesh
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs[*].name`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TrafficPolicySpec   `json:"spec"`
	Status TrafficPolicyStatus `json:"status,omitempty"`
}

// TrafficPolicySpec names the target Services and the behaviour they get.
type TrafficPolicySpec struct {
	// TargetRefs are the Services (in the policy's namespace) the policy
	// applies to.
	// +listType=map
	// +listMapKey=group
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []LocalPolicyTargetReference `json:"targetRefs"`
	// LoadBalancer chooses among the Service's ready endpoints; absent:
	// PeakEWMA.
	// +optional
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// SessionAffinity pins the requests that carry the same key (an
	// Mcp-Session-Id header, an A2A contextId, a cookie) to one endpoint
	// while it stays ready; requests without the key are balanced as
	// usual. Absent: no affinity.
	// +optional
	SessionAffinity *SessionAffinity `json:"sessionAffinity,omitempty"`
	// Timeouts of each request, in the caller's node. A route's own
	// timeouts take precedence for its requests. Absent: the mesh's
	// defaults.
	// +optional
	Timeouts *Timeouts `json:"timeouts,omitempty"`
	// RetryBudget caps the retries the mesh makes to the Service, so that
	// retries cannot multiply the load on a failing Service. Absent: 20 %
	// of the requests plus 10 a second.
	// +optional
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
	// RetryBackoff is the wait before each retry of a request for its
	// response's status (a route's retry.codes): Base, doubled with each
	// retry up to Max, with jitter. A route's retry.backoff takes
	// precedence over Base. Absent: 25ms up to 250ms.
	// +optional
	RetryBackoff *RetryBackoff `json:"retryBackoff,omitempty"`
	// CircuitBreaker limits what one node sends the Service at once; a
	// request over a limit fails at once with 503. Absent: no limits.
	// +optional
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// OutlierDetection stops sending requests to an endpoint that keeps
	// failing. Absent: no endpoint is ejected.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// RateLimit is enforced by each endpoint's node: a request over a
	// limit gets 429 with Retry-After. Absent: no limits.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// LocalPolicyTargetReference names a Service in the policy's namespace,
// in the form of Gateway API policy attachment.
//
// +kubebuilder:validation:XValidation:rule="self.group == \"\" && self.kind == 'Service'",message="a TrafficPolicy targets Services only: group \"\" (core) and kind Service"
type LocalPolicyTargetReference struct {
	// Group is the target's API group: "" (core, the default).
	// +optional
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group"`
	// Kind is the target's kind: Service (the default).
	// +optional
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`
	// Name is the Service's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// LoadBalancerAlgorithm is how an endpoint is chosen for a request.
// +kubebuilder:validation:Enum=PeakEWMA;RoundRobin;LeastRequest;ConsistentHash
type LoadBalancerAlgorithm string

// Load balancing algorithms.
const (
	// PeakEWMA: the better of two random endpoints by peak-EWMA latency
	// times open requests; favours fast endpoints (the default).
	PeakEWMA LoadBalancerAlgorithm = "PeakEWMA"
	// RoundRobin: each endpoint in turn.
	RoundRobin LoadBalancerAlgorithm = "RoundRobin"
	// LeastRequest: the one of two random endpoints with fewer open requests.
	LeastRequest LoadBalancerAlgorithm = "LeastRequest"
	// ConsistentHash: the endpoint the request's hash key maps to.
	ConsistentHash LoadBalancerAlgorithm = "ConsistentHash"
)

// LoadBalancer chooses among a Service's ready endpoints.
//
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'ConsistentHash' || has(self.hash)",message="algorithm ConsistentHash needs hash: the header, cookie or contextId to hash requests by"
// +kubebuilder:validation:XValidation:rule="!has(self.hash) || self.algorithm == 'ConsistentHash'",message="hash is used only by algorithm ConsistentHash (to pin requests under another algorithm, use sessionAffinity)"
type LoadBalancer struct {
	// Algorithm is PeakEWMA, RoundRobin, LeastRequest or ConsistentHash.
	Algorithm LoadBalancerAlgorithm `json:"algorithm"`
	// Hash is what requests are hashed by, for ConsistentHash (required
	// with it, refused with the others).
	// +optional
	Hash *HashKey `json:"hash,omitempty"`
}

// HashKey is what of a request identifies its conversation: exactly one
// of a header's value, a cookie's value, or the A2A contextId
// (params.message.contextId of the JSON-RPC body).
//
// +kubebuilder:validation:XValidation:rule="(has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) + (has(self.contextId) && self.contextId ? 1 : 0) == 1",message="set exactly one of header, cookie or contextId: true"
type HashKey struct {
	// Header is a request header's name, e.g. Mcp-Session-Id.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Header string `json:"header,omitempty"`
	// Cookie is a cookie's name.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Cookie string `json:"cookie,omitempty"`
	// ContextID true uses the A2A contextId of the request's JSON-RPC
	// body (read from its first 64 KiB).
	// +optional
	ContextID bool `json:"contextId,omitempty"`
}

// SessionAffinity pins the requests that carry the same key to one
// endpoint, by consistent hash over the ready endpoints: while that
// endpoint is ready the key's requests go there; when it is gone they
// move to another and stay there.
type SessionAffinity struct {
	// Key is what the requests of one session share.
	Key HashKey `json:"key"`
}

// Duration is a duration in the Gateway API format (GEP-2257): one to
// four numbers of at most five digits, each with a unit h, m, s or ms,
// e.g. "10s", "500ms", "1h30m".
//
// +kubebuilder:validation:MaxLength=28
// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
type Duration string

// Timeouts of a request, in the caller's node; "0s" or absent: none (the
// mesh's default).
//
// +kubebuilder:validation:XValidation:rule="has(self.connect) || has(self.firstByte) || has(self.idle) || has(self.total)",message="timeouts needs at least one of connect, firstByte, idle, total"
// +kubebuilder:validation:XValidation:rule="!has(self.firstByte) || !has(self.total) || !self.firstByte.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.total.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.total) == duration('0s') || duration(self.firstByte) <= duration(self.total)",message="firstByte must not be longer than total"
type Timeouts struct {
	// Connect bounds opening a connection to an endpoint.
	// +optional
	Connect *Duration `json:"connect,omitempty"`
	// FirstByte bounds the wait for the response's headers, from the
	// request's start (then 504).
	// +optional
	FirstByte *Duration `json:"firstByte,omitempty"`
	// Idle ends a response (or a streamed request) that moved no byte for
	// this long; streams such as SSE stay open while they move.
	// +optional
	Idle *Duration `json:"idle,omitempty"`
	// Total bounds the whole request, response included.
	// +optional
	Total *Duration `json:"total,omitempty"`
}

// RetryBudget bounds the mesh's retries to the Service to Percent of its
// requests over the last ten seconds plus MinRetriesPerSecond.
type RetryBudget struct {
	// Percent of the requests that may be retried (default 20).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent *int32 `json:"percent,omitempty"`
	// MinRetriesPerSecond are allowed whatever the percentage, so that a
	// Service with few requests can still be retried (default 10).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinRetriesPerSecond *int32 `json:"minRetriesPerSecond,omitempty"`
}

// RetryBackoff is the wait before a retry: Base before the first, doubled
// with each retry up to Max, plus up to as much again at random.
//
// +kubebuilder:validation:XValidation:rule="has(self.base) || has(self.max)",message="retryBackoff needs base or max"
// +kubebuilder:validation:XValidation:rule="!has(self.max) || !self.max.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (has(self.base) && !self.base.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')) || duration(self.max) >= duration(has(self.base) ? self.base : '25ms')",message="max must be at least base (default 25ms)"
type RetryBackoff struct {
	// Base is the wait before the first retry (default 25ms).
	// +optional
	Base *Duration `json:"base,omitempty"`
	// Max caps the wait (default 10 times base).
	// +optional
	Max *Duration `json:"max,omitempty"`
}

// CircuitBreaker limits what one node sends the Service at once; absent
// fields: no limit. A request over a limit gets 503 at once, with the
// Agentmesh-Error header naming the limit.
//
// +kubebuilder:validation:XValidation:rule="has(self.maxConnections) || has(self.maxPendingRequests) || has(self.maxRequests) || has(self.maxRequestsPerEndpoint)",message="circuitBreaker needs at least one of maxConnections, maxPendingRequests, maxRequests, maxRequestsPerEndpoint"
type CircuitBreaker struct {
	// MaxConnections to each endpoint.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxConnections *int32 `json:"maxConnections,omitempty"`
	// MaxPendingRequests waiting for a connection, for the Service.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// MaxRequests in flight to the Service.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRequests *int32 `json:"maxRequests,omitempty"`
	// MaxRequestsPerEndpoint in flight to each endpoint; an endpoint at
	// the limit is skipped while others have room.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRequestsPerEndpoint *int32 `json:"maxRequestsPerEndpoint,omitempty"`
}

// OutlierDetection ejects an endpoint that keeps failing: after
// ConsecutiveFailures 5xx answers or failed connects in a row it gets no
// requests for BaseEjectionTime times the number of its ejections (at
// most MaxEjectionTime); then one request probes it, and its success ends
// the ejection. At most MaxEjectedPercent of the endpoints are ejected at
// once (at least one, unless 0). An empty section enables it with the
// defaults.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxEjectionTime) || !self.maxEjectionTime.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (has(self.baseEjectionTime) && !self.baseEjectionTime.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')) || duration(self.maxEjectionTime) >= duration(has(self.baseEjectionTime) ? self.baseEjectionTime : '30s')",message="maxEjectionTime must be at least baseEjectionTime (default 30s)"
type OutlierDetection struct {
	// ConsecutiveFailures in a row that eject an endpoint (default 5).
	// +optional
	// +kubebuilder:validation:Minimum=1
	ConsecutiveFailures *int32 `json:"consecutiveFailures,omitempty"`
	// BaseEjectionTime is the first ejection's length (default 30s).
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="baseEjectionTime must be longer than 0s"
	BaseEjectionTime *Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionTime caps an ejection's length (default 300s, or
	// baseEjectionTime if that is longer).
	// +optional
	MaxEjectionTime *Duration `json:"maxEjectionTime,omitempty"`
	// MaxEjectedPercent of the Service's endpoints may be ejected at once
	// (default 10; 0 ejects none).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxEjectedPercent *int32 `json:"maxEjectedPercent,omitempty"`
}

// RateLimit is a set of token buckets in the node of each endpoint.
//
// +kubebuilder:validation:XValidation:rule="has(self.perEndpoint) || has(self.perSource) || has(self.tools)",message="rateLimit needs at least one of perEndpoint, perSource, tools"
type RateLimit struct {
	// PerEndpoint limits the requests to each endpoint.
	// +optional
	PerEndpoint *TokenBucket `json:"perEndpoint,omitempty"`
	// PerSource limits the requests to each endpoint from each caller
	// identity (service account).
	// +optional
	PerSource *TokenBucket `json:"perSource,omitempty"`
	// Tools limit the MCP tools/call requests to each endpoint, per tool.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Tools []ToolRateLimit `json:"tools,omitempty"`
}

// TokenBucket allows RequestsPerSecond on average and bursts of up to
// Burst requests.
type TokenBucket struct {
	// RequestsPerSecond refill the bucket.
	// +kubebuilder:validation:Minimum=1
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	// Burst is the bucket's size (default: requestsPerSecond).
	// +optional
	// +kubebuilder:validation:Minimum=1
	Burst *int32 `json:"burst,omitempty"`
}

// ToolRateLimit is the token bucket of one MCP tool.
type ToolRateLimit struct {
	// Name is the tool's name (params.name of tools/call).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// RequestsPerSecond refill the tool's bucket.
	// +kubebuilder:validation:Minimum=1
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	// Burst is the bucket's size (default: requestsPerSecond).
	// +optional
	// +kubebuilder:validation:Minimum=1
	Burst *int32 `json:"burst,omitempty"`
}

// TrafficPolicyStatus is the controller's view of the policy.
type TrafficPolicyStatus struct {
	// Conditions: Accepted (reasons Accepted, TargetNotFound, Conflicted,
	// Invalid), with the observedGeneration it was computed for.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Reasons of a TrafficPolicy's Accepted condition besides ReasonAccepted
// (it applies to some target) and ReasonInvalid (it cannot be applied).
const (
	// ReasonTargetNotFound: none of its target Services exists.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonConflicted: an older TrafficPolicy applies to each of its
	// targets that exists.
	ReasonConflicted = "Conflicted"
)

// TrafficPolicyList is a list of TrafficPolicy.
//
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}
