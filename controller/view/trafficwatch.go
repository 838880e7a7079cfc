package view

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// TrafficPolicyResource is the TrafficPolicy resource.
var TrafficPolicyResource = v1alpha1.SchemeGroupVersion.WithResource("trafficpolicies")

// KindTrafficPolicy is the TrafficPolicy kind.
const KindTrafficPolicy = "TrafficPolicy"

// DetectTrafficPolicy asks the apiserver's discovery whether
// TrafficPolicies are served. Unlike AgentPolicy the CRD is not required
// (a cluster upgraded from a release without it runs on): without it
// Services have no TrafficPolicy. Not served is no error.
func DetectTrafficPolicy(ctx context.Context, d discovery.ServerResourcesInterface) (bool, error) {
	dc := discovery.ToServerResourcesInterfaceWithContext(d)
	gv := v1alpha1.SchemeGroupVersion.String()
	list, err := dc.ServerResourcesForGroupVersionWithContext(ctx, gv)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", gv, err)
	}
	for _, r := range list.APIResources {
		if r.Name == TrafficPolicyResource.Resource {
			return true, nil
		}
	}
	return false, nil
}

// watchTraffic adds the TrafficPolicy informer when o.TrafficPolicies is
// set; its cache holds *v1alpha1.TrafficPolicy.
func (w *Watcher) watchTraffic() error {
	if !w.o.TrafficPolicies {
		return nil
	}
	inf := w.dynFactory.ForResource(TrafficPolicyResource).Informer()
	if err := inf.SetTransform(w.transform(KindTrafficPolicy, convert[v1alpha1.TrafficPolicy])); err != nil {
		return fmt.Errorf("set trafficpolicy transform: %w", err)
	}
	if _, err := inf.AddEventHandler(w.handler(func(obj any, d *Dirty) { d.Traffic = addKey(d.Traffic, obj) })); err != nil {
		return fmt.Errorf("add trafficpolicy event handler: %w", err)
	}
	w.trafficPolicies = inf.GetIndexer()
	w.synced = append(w.synced, inf.HasSynced)
	return nil
}

// listTraffic returns the cached TrafficPolicies (shared: do not modify).
func (w *Watcher) listTraffic() []*v1alpha1.TrafficPolicy {
	return listTyped[*v1alpha1.TrafficPolicy](w.trafficPolicies)
}

// TrafficPolicy returns the cached TrafficPolicy namespace/name, or nil.
// The object is shared with the cache: do not modify it.
func (w *Watcher) TrafficPolicy(namespace, name string) *v1alpha1.TrafficPolicy {
	if w.trafficPolicies == nil {
		return nil
	}
	obj, ok, err := w.trafficPolicies.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	p, _ := obj.(*v1alpha1.TrafficPolicy)
	return p
}
