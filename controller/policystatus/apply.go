package policystatus

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// apply sets the Accepted condition by server-side apply on the status
// subresource: only that condition is owned, others are left alone, and
// the uid makes it fail on a policy recreated under the same name.
func apply(ctx context.Context, c dynamic.Interface, ps *view.PolicyState, cond metav1.Condition) error {
	cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
	if err != nil {
		return fmt.Errorf("encode condition of %s: %w", ps.Key(), err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       "AgentPolicy",
		"metadata":   map[string]any{"name": ps.Name, "namespace": ps.Namespace, "uid": ps.UID},
		"status":     map[string]any{"conditions": []any{cm}},
	}}
	_, err = c.Resource(view.PolicyResource).Namespace(ps.Namespace).ApplyStatus(ctx, ps.Name, u,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("apply status of %s: %w", ps.Key(), err)
	}
	return nil
}

func typesUID(s string) types.UID { return types.UID(s) }
