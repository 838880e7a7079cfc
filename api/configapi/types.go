// Package configapi is the wire between the controller and the node
// components: the gRPC service agentmesh.v1.Mesh (StreamConfig, a
// bidirectional config stream, and SignCertificate) and its message types.
// Messages carry the same meshconfig types the node components use; the
// codec (CodecName) converts them to and from the protobuf messages of
// proto/agentmesh/v1/mesh.proto, the schema other languages build from.
// The generated code is committed (make proto regenerates it), and
// grpc-go's service code is this package's, not generated.
package configapi

import (
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

// Components that open a config stream.
const (
	ComponentAgentd  = "agentd"
	ComponentZtunnel = "ztunnel"
)

// ValidComponent reports whether c is a known component name.
func ValidComponent(c string) bool { return c == ComponentAgentd || c == ComponentZtunnel }

// ConfigRequest is what a node component sends on StreamConfig: first to
// subscribe (Node, Component), then one per ConfigResponse to ack its
// Version (AckVersion) or nack it (AckVersion and a non-empty Error).
type ConfigRequest struct {
	Node       string `json:"node"`
	Component  string `json:"component"`
	AckVersion uint64 `json:"ackVersion,omitempty"`
	Error      string `json:"error,omitempty"`
}

// ConfigResponse is one version of the node's view, or one chunk of it.
// Full replaces everything the client holds; otherwise Workloads and
// Services are upserts (by UID and by namespace/name) and Removed* name
// what to drop. Versions increase per node view.
//
// A version may come in chunks: every chunk but the last has More set,
// Full is set on the first chunk of a full view only, the last chunk
// carries the Version (the others may carry 0: they are shared by nodes
// whose versions differ), and the client applies (and acks) the version
// after its last chunk.
// Chunks apply in order, so a later chunk's upsert of a workload replaces
// an earlier one's (a full view sends every workload without Authz in
// chunks shared by all nodes, then the node's own workloads again, with
// their Authz).
type ConfigResponse struct {
	Version          uint64                `json:"version"`
	Full             bool                  `json:"full,omitempty"`
	More             bool                  `json:"more,omitempty"`
	TrustDomain      string                `json:"trustDomain"`
	TrustBundlePEM   []byte                `json:"trustBundlePEM,omitempty"`
	Workloads        []meshconfig.Workload `json:"workloads,omitempty"`
	RemovedWorkloads []string              `json:"removedWorkloads,omitempty"` // uids
	Services         []meshconfig.Service  `json:"services,omitempty"`
	RemovedServices  []string              `json:"removedServices,omitempty"` // namespace/name
	// Policies are upserts, by namespace/name, of the compiled
	// AgentPolicies this node's workloads refer to
	// (Workload.Authz.PolicyRefs): a full response carries each of them, a
	// delta those whose body changed and every one an upserted workload
	// refers to. The client keeps only policies some workload refers to,
	// so a deleted policy goes with the last reference to it.
	Policies []policy.Policy `json:"policies,omitempty"`
}

// SignRequest asks the controller's CA to sign a workload CSR.
type SignRequest struct {
	CSRPEM []byte `json:"csrPEM"`
}

// SignResponse is the issued chain, PEM, leaf first.
type SignResponse struct {
	ChainPEM []byte `json:"chainPEM"`
}
