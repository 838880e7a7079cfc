package lab

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentmesh/agentmesh/deploy"
)

// TestReadManifest decodes the rendered chart built into the binary and
// finds the objects the lab applies in Kubernetes mode.
func TestReadManifest(t *testing.T) {
	objs, err := decodeManifest(deploy.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, o := range objs {
		found[kindName(o)] = true
	}
	for _, want := range []string{"Namespace/" + MeshNamespace, "ServiceAccount/" + ControllerServiceAccount,
		"ServiceAccount/" + NodeServiceAccount, "ClusterRole/agentmesh-controller", "Role/agentmesh-controller"} {
		if !found[want] {
			t.Errorf("manifest has no %s (has %v)", want, found)
		}
	}
}

// TestReadManifestErrors: a broken document is an error, not skipped; an
// unknown kind is skipped.
func TestReadManifestErrors(t *testing.T) {
	p := t.TempDir() + "/bad.yaml"
	if err := os.WriteFile(p, []byte("# only a comment\n---\nkind: Nope\napiVersion: example.com/v9\n---\nkind: ServiceAccount\napiVersion: v1\nmetadata: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readManifest(p); err == nil {
		t.Error("broken document decoded without error")
	}
}

func kindName(o runtime.Object) string {
	switch t := o.(type) {
	case *corev1.Namespace:
		return "Namespace/" + t.Name
	case *corev1.ServiceAccount:
		return "ServiceAccount/" + t.Name
	case *rbacv1.ClusterRole:
		return "ClusterRole/" + t.Name
	case *rbacv1.Role:
		return "Role/" + t.Name
	}
	return ""
}

func TestReadManifestSkipsUnknownKinds(t *testing.T) {
	p := t.TempDir() + "/crd.yaml"
	doc := "kind: Nope\napiVersion: example.com/v9\n---\nkind: ServiceAccount\napiVersion: v1\nmetadata:\n  name: a\n  namespace: b\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := readManifest(p)
	if err != nil || len(objs) != 1 || kindName(objs[0]) != "ServiceAccount/a" {
		t.Errorf("readManifest: %v %v, want only ServiceAccount/a", objs, err)
	}
}
