package statusloop

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Object names the custom resource a condition is for, as the cache had
// it when the condition was decided.
type Object struct {
	Resource        schema.GroupVersionResource
	Kind            string
	Namespace, Name string
	UID             string
	// ResourceVersion is the version the condition was checked against.
	ResourceVersion string
}

// ApplyCondition sets cond on o's status by server-side apply on the
// status subresource, as fieldManager: only that condition is owned,
// others are left alone. It applies at o.ResourceVersion: the apiserver
// refuses it (Conflict) if the object changed since, or was deleted and
// created again under the same name (the uid alone does not: a custom
// resource's status apply keeps the stored metadata). A conflict, or an
// object gone (NotFound), is no error (wrote false): the cache's event
// about it brings a later view.
func ApplyCondition(ctx context.Context, c dynamic.Interface, o Object, fieldManager string, cond metav1.Condition) (wrote bool, err error) {
	cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
	if err != nil {
		return false, fmt.Errorf("encode condition of %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": o.Resource.GroupVersion().String(),
		"kind":       o.Kind,
		"metadata":   map[string]any{"name": o.Name, "namespace": o.Namespace, "uid": o.UID, "resourceVersion": o.ResourceVersion},
		"status":     map[string]any{"conditions": []any{cm}},
	}}
	_, err = c.Resource(o.Resource).Namespace(o.Namespace).ApplyStatus(ctx, o.Name, u,
		metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return false, nil
	}
	return false, fmt.Errorf("apply status of %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
}
