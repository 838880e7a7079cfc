package policystatus

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// apply sets the Accepted condition by server-side apply on the status
// subresource: only that condition is owned, others are left alone. It
// applies at resourceVersion rv, the version the condition was checked
// against: the apiserver refuses it (Conflict) if the policy changed
// since, or was deleted and created again under the same name (the uid
// alone does not: a custom resource's status apply keeps the stored
// metadata, so it wrote onto the new policy). A conflict or a deleted
// policy (NotFound) is no error (wrote false): the cache's event about it
// brings a later snapshot.
func apply(ctx context.Context, c dynamic.Interface, ps *view.PolicyState, rv string, cond metav1.Condition) (wrote bool, err error) {
	cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
	if err != nil {
		return false, fmt.Errorf("encode condition of %s: %w", ps.Key(), err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       "AgentPolicy",
		"metadata":   map[string]any{"name": ps.Name, "namespace": ps.Namespace, "uid": ps.UID, "resourceVersion": rv},
		"status":     map[string]any{"conditions": []any{cm}},
	}}
	_, err = c.Resource(view.PolicyResource).Namespace(ps.Namespace).ApplyStatus(ctx, ps.Name, u,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return false, nil
	}
	return false, fmt.Errorf("apply status of %s: %w", ps.Key(), err)
}

func typesUID(s string) types.UID { return types.UID(s) }
