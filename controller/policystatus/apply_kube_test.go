package policystatus

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// TestApplyRealAPIServer: on a real kube-apiserver, the status write of a
// policy's Accepted condition lands on the policy it was decided for, and
// not on one deleted and created again under the same name since (the uid
// alone let it through: a custom resource's status apply keeps the stored
// metadata), nor on a policy changed since.
func TestApplyRealAPIServer(t *testing.T) {
	bin, _ := filepath.Abs(filepath.Join("..", "..", "bin", "kube"))
	for _, b := range kubecp.Binaries {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("kubernetes binaries missing (run `make kube`): %v", err)
			}
			t.Skipf("kubernetes binaries missing (run `make kube`): %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: bin, StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() { cp.Stop() })
	if err := kubecp.InstallCRDs(ctx, cp.AdminConfig(), filepath.Join("..", "..", "deploy", "charts", "agentmesh", "crds")); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(view.PolicyResource).Namespace("default")
	create := func() *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
			"metadata": map[string]any{"name": "p", "namespace": "default"},
			"spec":     map[string]any{"podSelector": map[string]any{}, "action": "Allow"}}}
		out, err := res.Create(ctx, u, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	accepted := func() *metav1.Condition {
		t.Helper()
		u, err := res.Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var p v1alpha1.AgentPolicy
		if err := runtimeFromUnstructured(u, &p); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonInvalid,
		Message: "decided for the first policy", LastTransitionTime: metav1.Now()}

	old := create()
	ps := &view.PolicyState{Namespace: "default", Name: "p", UID: string(old.GetUID())}
	if err := res.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := create()
	wrote, err := apply(ctx, dyn, ps, old.GetResourceVersion(), cond)
	if err != nil || wrote {
		t.Fatalf("apply for the deleted policy: wrote %v, %v; want nothing written, no error", wrote, err)
	}
	if c := accepted(); c != nil {
		t.Fatalf("the new policy got the old one's condition: %+v", c)
	}

	ps.UID = string(fresh.GetUID())
	wrote, err = apply(ctx, dyn, ps, fresh.GetResourceVersion(), cond)
	if err != nil || !wrote {
		t.Fatalf("apply for the policy as it is: wrote %v, %v", wrote, err)
	}
	if c := accepted(); c == nil || c.Message != cond.Message {
		t.Fatalf("Accepted after the write: %+v", c)
	}
	// At the version before that write: refused, no error.
	cond.Message = "stale"
	if wrote, err := apply(ctx, dyn, ps, fresh.GetResourceVersion(), cond); err != nil || wrote {
		t.Fatalf("apply at a stale version: wrote %v, %v", wrote, err)
	}
}

func runtimeFromUnstructured(u *unstructured.Unstructured, p *v1alpha1.AgentPolicy) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p)
}
