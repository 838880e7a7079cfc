package view

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// The Gateway API resources the mesh reads (GAMMA: routes whose parent is
// a Service). ReferenceGrants are read at v1beta1, the version every
// Gateway API release since v0.6 serves.
var (
	GatewayV1              = schema.GroupVersion{Group: gwv1.GroupName, Version: "v1"}
	GatewayV1beta1         = schema.GroupVersion{Group: gwv1beta1.GroupName, Version: "v1beta1"}
	HTTPRouteResource      = GatewayV1.WithResource("httproutes")
	GRPCRouteResource      = GatewayV1.WithResource("grpcroutes")
	ReferenceGrantResource = GatewayV1beta1.WithResource("referencegrants")
)

// Route kinds, as Route.Kind and RouteState.Kind name them.
const (
	KindHTTPRoute      = "HTTPRoute"
	KindGRPCRoute      = "GRPCRoute"
	KindReferenceGrant = "ReferenceGrant"
)

// GatewayAPI says which Gateway API resources the cluster serves; the
// Watcher watches those. Unlike AgentPolicy, none is required: without
// them Services simply have no routes.
type GatewayAPI struct {
	HTTPRoutes, GRPCRoutes, ReferenceGrants bool
}

// Any reports whether some route kind is served.
func (g GatewayAPI) Any() bool { return g.HTTPRoutes || g.GRPCRoutes }

// Missing names the resources g lacks ("" when none).
func (g GatewayAPI) Missing() string {
	var out []string
	for _, r := range []struct {
		ok  bool
		gvr schema.GroupVersionResource
	}{{g.HTTPRoutes, HTTPRouteResource}, {g.GRPCRoutes, GRPCRouteResource}, {g.ReferenceGrants, ReferenceGrantResource}} {
		if !r.ok {
			out = append(out, r.gvr.Resource+"."+r.gvr.Group+"/"+r.gvr.Version)
		}
	}
	return strings.Join(out, ", ")
}

// DetectGatewayAPI asks the apiserver's discovery which of the Gateway
// API resources the mesh reads are served. A group version that is not
// served (the CRDs are not installed) is no error.
func DetectGatewayAPI(ctx context.Context, d discovery.ServerResourcesInterface) (GatewayAPI, error) {
	var g GatewayAPI
	dc := discovery.ToServerResourcesInterfaceWithContext(d)
	for _, gv := range []schema.GroupVersion{GatewayV1, GatewayV1beta1} {
		list, err := dc.ServerResourcesForGroupVersionWithContext(ctx, gv.String())
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return g, fmt.Errorf("discover %s: %w", gv, err)
		}
		for _, r := range list.APIResources {
			switch gv.WithResource(r.Name) {
			case HTTPRouteResource:
				g.HTTPRoutes = true
			case GRPCRouteResource:
				g.GRPCRoutes = true
			case ReferenceGrantResource:
				g.ReferenceGrants = true
			}
		}
	}
	return g, nil
}

// watchRoutes adds informers for the Gateway API resources o.Gateway
// names, on the dynamic factory; their caches hold the typed objects.
func (w *Watcher) watchRoutes() error {
	for _, r := range []struct {
		on    bool
		kind  string
		gvr   schema.GroupVersionResource
		store *cache.Indexer
		conv  func(*unstructured.Unstructured) (runtime.Object, error)
	}{
		{w.o.Gateway.HTTPRoutes, KindHTTPRoute, HTTPRouteResource, &w.httpRoutes, convert[gwv1.HTTPRoute]},
		{w.o.Gateway.GRPCRoutes, KindGRPCRoute, GRPCRouteResource, &w.grpcRoutes, convert[gwv1.GRPCRoute]},
		{w.o.Gateway.ReferenceGrants, KindReferenceGrant, ReferenceGrantResource, &w.grants, convert[gwv1beta1.ReferenceGrant]},
	} {
		if !r.on {
			continue
		}
		inf := w.dynFactory.ForResource(r.gvr).Informer()
		if err := inf.SetTransform(w.transform(r.kind, r.conv)); err != nil {
			return fmt.Errorf("set %s transform: %w", r.gvr.Resource, err)
		}
		kind := r.kind
		if _, err := inf.AddEventHandler(w.handler(func(obj any, d *Dirty) { d.Routes = addKindKey(d.Routes, kind, obj) })); err != nil {
			return fmt.Errorf("add %s event handler: %w", r.gvr.Resource, err)
		}
		*r.store = inf.GetIndexer()
		w.synced = append(w.synced, inf.HasSynced)
	}
	return nil
}

// convert is runtime's conversion of u into a new *T.
func convert[T any, PT interface {
	*T
	runtime.Object
}](u *unstructured.Unstructured) (runtime.Object, error) {
	out := PT(new(T))
	err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out)
	return out, err
}

// transform converts what the dynamic informer stores into the typed
// object. One that does not fit its Go type (a newer Gateway API than
// the mesh knows, in a way it cannot read) keeps its metadata only: a
// route then has no parents, and the mesh neither routes by it nor
// writes its status; a TrafficPolicy has no targets, and is Invalid.
func (w *Watcher) transform(kind string, conv func(*unstructured.Unstructured) (runtime.Object, error)) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		out, err := conv(u)
		if err != nil {
			w.o.Logger.Warn("object does not fit its Go type; only its metadata is read", "kind", kind,
				"object", u.GetNamespace()+"/"+u.GetName(), "err", err)
			out, _ = conv(&unstructured.Unstructured{Object: map[string]any{"metadata": u.Object["metadata"]}})
		}
		if m, err := metaOf(out); err == nil {
			m.SetManagedFields(nil) // not read; a route's can be large
		}
		return out, nil
	}
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}

// addKindKey adds kind/namespace/name of obj to set.
func addKindKey(set map[string]bool, kind string, obj any) map[string]bool {
	k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil || k == "" {
		return set
	}
	if set == nil {
		set = map[string]bool{}
	}
	set[kind+"/"+k] = true
	return set
}

// listRoutes returns the cached Gateway API objects (shared: do not
// modify).
func (w *Watcher) listRoutes() RouteInputs {
	return RouteInputs{
		HTTPRoutes: listTyped[*gwv1.HTTPRoute](w.httpRoutes),
		GRPCRoutes: listTyped[*gwv1.GRPCRoute](w.grpcRoutes),
		Grants:     listTyped[*gwv1beta1.ReferenceGrant](w.grants),
	}
}

func listTyped[T any](store cache.Indexer) []T {
	if store == nil {
		return nil
	}
	objs := store.List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// RouteStatus returns the metadata and status parents of the cached
// route kind (KindHTTPRoute or KindGRPCRoute) namespace/name; ok is false
// when the cache has none. The parents are shared with the cache: do not
// modify them.
func (w *Watcher) RouteStatus(kind, namespace, name string) (meta metav1.ObjectMeta, parents []gwv1.RouteParentStatus, ok bool) {
	store := w.httpRoutes
	if kind == KindGRPCRoute {
		store = w.grpcRoutes
	}
	if store == nil {
		return meta, nil, false
	}
	obj, found, err := store.GetByKey(namespace + "/" + name)
	if err != nil || !found {
		return meta, nil, false
	}
	switch r := obj.(type) {
	case *gwv1.HTTPRoute:
		return r.ObjectMeta, r.Status.Parents, true
	case *gwv1.GRPCRoute:
		return r.ObjectMeta, r.Status.Parents, true
	}
	return meta, nil, false
}
