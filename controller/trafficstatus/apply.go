package trafficstatus

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// apply sets the Accepted condition by server-side apply on the status
// subresource: only that condition is owned, others are left alone. It
// applies at resourceVersion rv, the version the condition was checked
// against: the apiserver refuses it (Conflict) if the policy changed
// since, or was recreated under the same name (the uid alone would not
// do: a custom resource's status update keeps the stored metadata). A
// conflict, or a policy deleted (NotFound), is no error (wrote false):
// the change shows in the cache, whose event brings a later view.
func apply(ctx context.Context, c dynamic.Interface, ts *view.TrafficState, rv string, cond metav1.Condition) (wrote bool, err error) {
	cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
	if err != nil {
		return false, fmt.Errorf("encode condition of %s: %w", ts.Key(), err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       view.KindTrafficPolicy,
		"metadata":   map[string]any{"name": ts.Name, "namespace": ts.Namespace, "uid": ts.UID, "resourceVersion": rv},
		"status":     map[string]any{"conditions": []any{cm}},
	}}
	_, err = c.Resource(view.TrafficPolicyResource).Namespace(ts.Namespace).ApplyStatus(ctx, ts.Name, u,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return false, nil
	}
	return false, fmt.Errorf("apply status of trafficpolicy %s: %w", ts.Key(), err)
}
