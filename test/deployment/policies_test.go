package deployment

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// Objects the controller binary must write about with only its rights: a
// policy with L7 fields (status and event) and a namespace with an invalid
// annotation (event).
const (
	badPolicy = "bad-selector"
	badNS     = "bad-annotation"
)

// seedPolicyObjects creates them as the admin, before the controller runs.
func seedPolicyObjects(ctx context.Context, t *testing.T, admin *rest.Config) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(admin)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: badNS,
		Annotations: map[string]string{v1alpha1.MTLSModeAnnotation: "strict"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
		"metadata": map[string]any{"name": badPolicy, "namespace": "default"},
		"spec": map[string]any{"podSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "app", "operator": "Bogus"}}}, "action": "Deny",
			"rules": []any{map[string]any{"ports": []any{map[string]any{"port": 22}}}}}}}
	if _, err := dynamic.NewForConfigOrDie(admin).Resource(view.PolicyResource).Namespace("default").Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create agentpolicy: %v", err)
	}
}

// checkPolicyWrites waits for the leader's status patch and events.
func checkPolicyWrites(ctx context.Context, t *testing.T, admin *rest.Config) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(admin)
	cs := kubernetes.NewForConfigOrDie(admin)
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		u, err := dyn.Resource(view.PolicyResource).Namespace("default").Get(ctx, badPolicy, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == v1alpha1.ConditionAccepted && m["reason"] == v1alpha1.ReasonInvalid
		}), nil
	})
	if err != nil {
		t.Fatalf("agentpolicy status not written: %v", err)
	}
	for _, want := range []struct{ kind, name, reason string }{
		{"AgentPolicy", badPolicy, v1alpha1.ReasonInvalid},
		{"Namespace", badNS, view.ReasonInvalidAnnotation},
	} {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
				return e.InvolvedObject.Kind == want.kind && e.InvolvedObject.Name == want.name && e.Reason == want.reason
			}), nil
		})
		if err != nil {
			t.Errorf("no %s event on %s %s: %v", want.reason, want.kind, want.name, err)
		}
	}
}
