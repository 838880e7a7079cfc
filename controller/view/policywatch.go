package view

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// PolicyResource is the AgentPolicy resource.
var PolicyResource = v1alpha1.SchemeGroupVersion.WithResource("agentpolicies")

// CheckCRD fails when the AgentPolicy CRD is not served, so that the
// controller does not run without policies.
func CheckCRD(ctx context.Context, dyn dynamic.Interface) error {
	_, err := dyn.Resource(PolicyResource).List(ctx, metav1.ListOptions{Limit: 1})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("AgentPolicy CRD agentpolicies.agentmesh.io not installed: %w", err)
	case err != nil:
		return fmt.Errorf("list agentpolicies: %w", err)
	}
	return nil
}

// watchPolicies adds the AgentPolicy informer; its cache holds
// *v1alpha1.AgentPolicy.
func (w *Watcher) watchPolicies() error {
	inf := w.dynFactory.ForResource(PolicyResource).Informer()
	if err := inf.SetTransform(w.toPolicy); err != nil {
		return fmt.Errorf("set agentpolicy transform: %w", err)
	}
	if _, err := inf.AddEventHandler(w.handler(func(obj any, d *Dirty) { d.Policies = addKey(d.Policies, obj) })); err != nil {
		return fmt.Errorf("add agentpolicy event handler: %w", err)
	}
	w.policies = inf.GetIndexer()
	w.synced = append(w.synced, inf.HasSynced)
	return nil
}

// toPolicy converts what the dynamic informer stores. An object that does
// not fit the Go type keeps its metadata and an empty action, which
// Compile rejects: it is then enforced fail closed.
func (w *Watcher) toPolicy(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	p := &v1alpha1.AgentPolicy{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
		w.o.Logger.Warn("agentpolicy does not fit its type", "policy", u.GetNamespace()+"/"+u.GetName(), "err", err)
		p = &v1alpha1.AgentPolicy{TypeMeta: metav1.TypeMeta{APIVersion: u.GetAPIVersion(), Kind: u.GetKind()}}
		p.Namespace, p.Name, p.UID, p.Generation = u.GetNamespace(), u.GetName(), u.GetUID(), u.GetGeneration()
		p.ResourceVersion = u.GetResourceVersion()
	}
	return p, nil
}

// listPolicies returns the cached policies (shared: do not modify).
func (w *Watcher) listPolicies() []*v1alpha1.AgentPolicy {
	objs := w.policies.List()
	out := make([]*v1alpha1.AgentPolicy, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*v1alpha1.AgentPolicy); ok {
			out = append(out, p)
		}
	}
	return out
}

// Policy returns the cached AgentPolicy namespace/name, or nil. The object
// is shared with the cache: do not modify it.
func (w *Watcher) Policy(namespace, name string) *v1alpha1.AgentPolicy {
	obj, ok, err := w.policies.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	p, _ := obj.(*v1alpha1.AgentPolicy)
	return p
}
