package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/agentmesh/agentmesh/deploy"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// ManifestPath is the rendered Helm chart, relative to the module root
// (the binaries carry a copy: deploy.Manifest).
const ManifestPath = "deploy/manifests/agentmesh.yaml"

// InstallMeshCRDs installs the chart's CRDs (embedded in the binary:
// deploy.CRDs: AgentPolicy and the Gateway API's HTTPRoute, GRPCRoute and
// ReferenceGrant) and waits until they are served.
func InstallMeshCRDs(ctx context.Context, cfg *rest.Config) error {
	return kubecp.InstallCRDsFS(ctx, cfg, deploy.CRDs())
}

// labControllerRole is the lab's own grant to the controller when there is
// no manifest: exactly what controller/run.go documents.
const labControllerRole = "amlab:agentmesh-controller"

// ApplyMeshObjects creates the mesh's namespace, service accounts and the
// controller's RBAC from a rendered chart (so the lab proves the chart's
// RBAC is enough): the file manifest, or with "" the one in the binary
// (deploy.Manifest). A manifest file that does not exist gives the lab's
// minimal set. It returns how many objects came from the manifest.
func ApplyMeshObjects(ctx context.Context, c kubernetes.Interface, manifest string) (applied int, err error) {
	data, name := deploy.Manifest, "embedded manifest"
	if manifest != "" {
		data, name = nil, manifest
		if data, err = os.ReadFile(manifest); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("read manifest: %w", err)
		}
	}
	if len(data) > 0 {
		objs, err := decodeManifest(data)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		for _, o := range objs {
			ok, err := createObject(ctx, c, o)
			if err != nil {
				return applied, fmt.Errorf("apply %s: %w", name, err)
			}
			if ok {
				applied++
			}
		}
	}
	if applied > 0 {
		return applied, nil
	}
	for _, o := range minimalMeshObjects() {
		if _, err := createObject(ctx, c, o); err != nil {
			return applied, err
		}
	}
	return applied, nil
}

// readManifest decodes every document of a multi-document YAML file.
func readManifest(path string) ([]runtime.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return decodeManifest(data)
}

// decodeManifest decodes every document of a multi-document YAML text,
// skipping kinds client-go does not know.
func decodeManifest(data []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("split manifest: %w", err)
		}
		if !bytes.Contains(doc, []byte("kind:")) {
			continue // comments only
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			continue // a kind client-go does not know (a CRD): not one the lab applies
		}
		if err != nil {
			return nil, fmt.Errorf("decode manifest: %w", err)
		}
		out = append(out, obj)
	}
}

// createObject creates the kinds the lab needs (others are skipped: the
// lab runs the controller and node components itself); an object that
// exists already is fine. It reports whether o was of such a kind.
func createObject(ctx context.Context, c kubernetes.Interface, o runtime.Object) (bool, error) {
	var err error
	opts := metav1.CreateOptions{}
	switch t := o.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, t, opts)
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(t.Namespace).Create(ctx, t, opts)
	case *rbacv1.ClusterRole:
		_, err = c.RbacV1().ClusterRoles().Create(ctx, t, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, t, opts)
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(t.Namespace).Create(ctx, t, opts)
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(t.Namespace).Create(ctx, t, opts)
	default:
		return false, nil
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return true, fmt.Errorf("create %T: %w", o, err)
	}
	return true, nil
}

// minimalMeshObjects are the namespace, the two service accounts and the
// controller's rights (controller/run.go's package doc).
func minimalMeshObjects() []runtime.Object {
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: MeshNamespace} }
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: ControllerServiceAccount, Namespace: MeshNamespace}}
	rule := func(group string, res []string, verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: res, Verbs: verbs}
	}
	return []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: MeshNamespace}},
		&corev1.ServiceAccount{ObjectMeta: meta(ControllerServiceAccount)},
		&corev1.ServiceAccount{ObjectMeta: meta(NodeServiceAccount)},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: labControllerRole}, Rules: []rbacv1.PolicyRule{
			rule("", []string{"pods", "namespaces", "services", "nodes", "serviceaccounts"}, "list", "watch"),
			rule("discovery.k8s.io", []string{"endpointslices"}, "list", "watch"),
			rule("authentication.k8s.io", []string{"tokenreviews"}, "create"),
			rule("agentmesh.io", []string{"agentpolicies"}, "list", "watch"),
			rule("agentmesh.io", []string{"agentpolicies/status"}, "patch"),
			rule("agentmesh.io", []string{"trafficpolicies"}, "list", "watch"),
			rule("agentmesh.io", []string{"trafficpolicies/status"}, "patch"),
			rule("gateway.networking.k8s.io", []string{"httproutes", "grpcroutes", "referencegrants"}, "list", "watch"),
			rule("gateway.networking.k8s.io", []string{"httproutes", "grpcroutes"}, "get"),
			rule("gateway.networking.k8s.io", []string{"httproutes/status", "grpcroutes/status"}, "update"),
			rule("", []string{"events"}, "create", "patch"),
		}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: labControllerRole}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: labControllerRole}},
		&rbacv1.Role{ObjectMeta: meta(labControllerRole), Rules: []rbacv1.PolicyRule{
			rule("", []string{"secrets"}, "get", "create"),
			rule("", []string{"configmaps"}, "get", "create", "update"),
			rule("coordination.k8s.io", []string{"leases"}, "get", "create", "update"),
		}},
		&rbacv1.RoleBinding{ObjectMeta: meta(labControllerRole), Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: labControllerRole}},
	}
}
