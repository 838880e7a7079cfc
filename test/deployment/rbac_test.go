package deployment

import (
	"context"
	"fmt"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// access is one question to the authorizer: may the account do verb on
// group/resource (name) in namespace ("" = cluster-wide)?
type access struct {
	verb, group, resource, ns, name string
	allowed                         bool
}

func (a access) String() string {
	return fmt.Sprintf("%s %s.%s ns=%q name=%q", a.verb, a.resource, a.group, a.ns, a.name)
}

// controllerAccess is everything controller/ needs (allowed) and a sample
// of what it must not have (denied).
var controllerAccess = []access{
	// controller/view informers, cluster-wide.
	{"list", "", "pods", "", "", true},
	{"watch", "", "pods", "", "", true},
	{"list", "", "services", "", "", true},
	{"watch", "", "services", "", "", true},
	{"list", "", "namespaces", "", "", true},
	{"watch", "", "namespaces", "", "", true},
	{"list", "discovery.k8s.io", "endpointslices", "", "", true},
	{"watch", "discovery.k8s.io", "endpointslices", "", "", true},
	{"list", "", "nodes", "", "", true},
	{"watch", "", "nodes", "", "", true},
	{"list", "", "serviceaccounts", "", "", true},
	{"watch", "", "serviceaccounts", "", "", true},
	// controller/view: the AgentPolicy informer, cluster-wide.
	{"list", "agentmesh.io", "agentpolicies", "", "", true},
	{"watch", "agentmesh.io", "agentpolicies", "", "", true},
	// controller/policystatus (the leader): server-side apply of status,
	// events on policies (any namespace), namespaces ("default") and pods.
	{"patch", "agentmesh.io", "agentpolicies/status", "", "", true},
	// controller/view: Gateway API routes (GAMMA) and ReferenceGrants;
	// controller/routestatus (the leader) reads a route and updates its
	// status.
	{"list", "gateway.networking.k8s.io", "httproutes", "", "", true},
	{"watch", "gateway.networking.k8s.io", "httproutes", "", "", true},
	{"get", "gateway.networking.k8s.io", "httproutes", "", "", true},
	{"update", "gateway.networking.k8s.io", "httproutes/status", "", "", true},
	{"list", "gateway.networking.k8s.io", "grpcroutes", "", "", true},
	{"watch", "gateway.networking.k8s.io", "grpcroutes", "", "", true},
	{"get", "gateway.networking.k8s.io", "grpcroutes", "", "", true},
	{"update", "gateway.networking.k8s.io", "grpcroutes/status", "", "", true},
	{"list", "gateway.networking.k8s.io", "referencegrants", "", "", true},
	{"watch", "gateway.networking.k8s.io", "referencegrants", "", "", true},
	// controller/view: the TrafficPolicy informer, cluster-wide;
	// controller/trafficstatus (the leader): server-side apply of status.
	{"list", "agentmesh.io", "trafficpolicies", "", "", true},
	{"watch", "agentmesh.io", "trafficpolicies", "", "", true},
	{"patch", "agentmesh.io", "trafficpolicies/status", "", "", true},
	{"create", "", "events", "", "", true},
	{"patch", "", "events", "", "", true},
	// controller/auth.
	{"create", "authentication.k8s.io", "tokenreviews", "", "", true},
	// controller/ca, in its namespace.
	{"create", "", "secrets", meshNS, "", true},
	{"get", "", "secrets", meshNS, caSecret, true},
	// ca.Rotation: every replica watches the CA Secret (by name), the
	// leader writes the steps of a root rotation into it.
	{"list", "", "secrets", meshNS, caSecret, true},
	{"watch", "", "secrets", meshNS, caSecret, true},
	{"update", "", "secrets", meshNS, caSecret, true},
	{"create", "", "configmaps", meshNS, "", true},
	{"get", "", "configmaps", meshNS, rootCM, true},
	{"update", "", "configmaps", meshNS, rootCM, true},
	// leader election.
	{"create", "coordination.k8s.io", "leases", meshNS, "", true},
	{"get", "coordination.k8s.io", "leases", meshNS, leaseName, true},
	{"update", "coordination.k8s.io", "leases", meshNS, leaseName, true},

	// No other secret, anywhere.
	{"get", "", "secrets", meshNS, "other", false},
	{"list", "", "secrets", meshNS, "", false},
	{"watch", "", "secrets", meshNS, "", false},
	{"list", "", "secrets", "", "", false},
	{"get", "", "secrets", "kube-system", caSecret, false},
	{"create", "", "secrets", "default", "", false},
	{"update", "", "secrets", meshNS, "other", false},
	{"delete", "", "secrets", meshNS, caSecret, false},
	// Only reads of workloads.
	{"get", "", "pods", "default", "p", false},
	{"create", "", "pods", "default", "", false},
	{"update", "", "pods", "default", "p", false},
	{"patch", "", "pods", "default", "p", false},
	{"delete", "", "pods", "default", "p", false},
	{"update", "", "services", "default", "s", false},
	{"create", "discovery.k8s.io", "endpointslices", "default", "", false},
	{"update", "", "namespaces", "", "default", false},
	{"get", "", "nodes", "", "n", false},
	{"update", "", "nodes", "", "n", false},
	{"delete", "", "nodes", "", "n", false},
	{"get", "", "serviceaccounts", meshNS, nodeSA, false},
	{"create", "", "serviceaccounts", meshNS, "", false},
	{"update", "", "serviceaccounts", meshNS, nodeSA, false},
	// Policies: only their status, only by patch; events: only recorded.
	{"get", "agentmesh.io", "agentpolicies", "default", "p", false},
	{"create", "agentmesh.io", "agentpolicies", "default", "", false},
	{"update", "agentmesh.io", "agentpolicies", "default", "p", false},
	{"patch", "agentmesh.io", "agentpolicies", "default", "p", false},
	{"delete", "agentmesh.io", "agentpolicies", "default", "p", false},
	{"update", "agentmesh.io", "agentpolicies/status", "default", "p", false},
	{"get", "agentmesh.io", "trafficpolicies", "default", "p", false},
	{"create", "agentmesh.io", "trafficpolicies", "default", "", false},
	{"update", "agentmesh.io", "trafficpolicies", "default", "p", false},
	{"patch", "agentmesh.io", "trafficpolicies", "default", "p", false},
	{"delete", "agentmesh.io", "trafficpolicies", "default", "p", false},
	{"update", "agentmesh.io", "trafficpolicies/status", "default", "p", false},
	{"create", "gateway.networking.k8s.io", "httproutes", "default", "", false},
	{"update", "gateway.networking.k8s.io", "httproutes", "default", "r", false},
	{"delete", "gateway.networking.k8s.io", "grpcroutes", "default", "r", false},
	{"get", "gateway.networking.k8s.io", "referencegrants", "default", "g", false},
	{"get", "", "events", "default", "e", false},
	{"list", "", "events", "", "", false},
	{"update", "", "events", "default", "e", false},
	{"delete", "", "events", "default", "e", false},
	// Nothing it does not use.
	{"create", "", "serviceaccounts/token", meshNS, nodeSA, false},
	{"list", "", "configmaps", meshNS, "", false},
	{"update", "", "configmaps", meshNS, "other", false},
	{"get", "", "configmaps", "kube-system", rootCM, false},
	{"update", "coordination.k8s.io", "leases", meshNS, "other", false},
	{"update", "coordination.k8s.io", "leases", "kube-system", leaseName, false},
	{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false},
	{"create", "rbac.authorization.k8s.io", "rolebindings", meshNS, "", false},
	{"create", "authorization.k8s.io", "subjectaccessreviews", "", "", false},
}

// nodeAccess: agentd and ztunnel talk only to the controller, so the node
// account has no rights beyond every authenticated user's defaults.
var nodeAccess = []access{
	{"create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "", true}, // system:basic-user
	{"list", "", "pods", "", "", false},
	{"get", "", "pods", meshNS, "p", false},
	{"list", "", "services", "", "", false},
	{"list", "discovery.k8s.io", "endpointslices", "", "", false},
	{"list", "", "namespaces", "", "", false},
	{"get", "", "nodes", "", "n", false},
	{"get", "", "secrets", meshNS, caSecret, false},
	{"list", "", "secrets", "", "", false},
	{"get", "", "configmaps", meshNS, rootCM, false}, // the kubelet mounts it, not the pod
	{"create", "authentication.k8s.io", "tokenreviews", "", "", false},
	{"create", "", "serviceaccounts/token", meshNS, nodeSA, false},
	{"get", "coordination.k8s.io", "leases", meshNS, leaseName, false},
	{"list", "agentmesh.io", "agentpolicies", "", "", false},
	{"patch", "agentmesh.io", "agentpolicies/status", "default", "p", false},
	{"list", "agentmesh.io", "trafficpolicies", "", "", false},
	{"patch", "agentmesh.io", "trafficpolicies/status", "default", "p", false},
	{"create", "", "events", "default", "", false},
}

// checkAccess asks the apiserver, authenticated as the account cfg holds,
// every question in table (SelfSubjectAccessReview: the real authorizer
// with the account's real groups).
func checkAccess(ctx context.Context, t *testing.T, cfg *rest.Config, table []access) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cfg)
	for _, a := range table {
		res, sub := split(a.resource)
		ssar := &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: a.verb, Group: a.group,
				Resource: res, Subresource: sub, Namespace: a.ns, Name: a.name}}}
		got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%v: %v", a, err)
		}
		if got.Status.Allowed != a.allowed {
			t.Errorf("%v: allowed=%v, want %v (%s)", a, got.Status.Allowed, a.allowed, got.Status.Reason)
		}
	}
}

// split turns "serviceaccounts/token" into resource and subresource.
func split(r string) (resource, subresource string) {
	resource, subresource, _ = strings.Cut(r, "/")
	return resource, subresource
}
