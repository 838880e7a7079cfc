package routestatus

import (
	"context"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/controller/view"
)

// maxConflicts bounds the read-modify-write rounds of one update; a route
// written that often by others meanwhile is tried again on the next sync.
const maxConflicts = 5

// update sets rs's entries in the route's status.parents and leaves the
// other controllers' entries as they are: it reads the route, replaces
// the mesh's entries (keeping lastTransitionTime of conditions whose
// status stays) and updates the status subresource at the version read,
// again on a conflict. It does nothing for a route deleted, recreated
// (another uid) or of another generation than rs (a later view has it),
// or that has the entries already; wrote reports whether it wrote.
func update(ctx context.Context, c dynamic.Interface, rs *view.RouteState) (wrote bool, err error) {
	gvr := view.HTTPRouteResource
	if rs.Kind == view.KindGRPCRoute {
		gvr = view.GRPCRouteResource
	}
	res := c.Resource(gvr).Namespace(rs.Namespace)
	for attempt := 0; ; attempt++ {
		u, err := res.Get(ctx, rs.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("get %s: %w", rs.Key(), err)
		}
		if string(u.GetUID()) != rs.UID || u.GetGeneration() != rs.Generation {
			return false, nil
		}
		changed, err := setParents(u, rs.Parents)
		if err != nil || !changed {
			return false, err
		}
		_, err = res.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsConflict(err) && attempt < maxConflicts:
			continue
		case apierrors.IsNotFound(err):
			return false, nil
		}
		return false, fmt.Errorf("update status of %s: %w", rs.Key(), err)
	}
}

// setParents replaces the mesh's entries of u's status.parents with want;
// changed is false when they say the same already.
func setParents(u *unstructured.Unstructured, want []gwv1.RouteParentStatus) (changed bool, err error) {
	raw, _, err := unstructured.NestedSlice(u.Object, "status", "parents")
	if err != nil {
		return false, fmt.Errorf("%s/%s: status.parents: %w", u.GetNamespace(), u.GetName(), err)
	}
	var others []any
	var old []gwv1.RouteParentStatus
	for _, e := range raw {
		m, _ := e.(map[string]any)
		if m["controllerName"] != string(view.GatewayControllerName) {
			others = append(others, e)
			continue
		}
		var p gwv1.RouteParentStatus
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &p); err != nil {
			continue // unreadable: replaced below
		}
		old = append(old, p)
	}
	if len(old) == len(raw)-len(others) && sameParents(old, want) {
		return false, nil
	}
	entries := others
	for _, p := range merge(want, old, metav1.Now()) {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&p)
		if err != nil {
			return false, fmt.Errorf("encode route parent status: %w", err)
		}
		entries = append(entries, m)
	}
	if entries == nil {
		entries = []any{}
	}
	if err := unstructured.SetNestedSlice(u.Object, entries, "status", "parents"); err != nil {
		return false, fmt.Errorf("set status.parents: %w", err)
	}
	return true, nil
}

// merge is want with the lastTransitionTime of every condition whose
// status old (the entry of the same parentRef) had already, and now for
// the others.
func merge(want, old []gwv1.RouteParentStatus, now metav1.Time) []gwv1.RouteParentStatus {
	out := make([]gwv1.RouteParentStatus, len(want))
	for i, p := range want {
		var prev []metav1.Condition
		for _, o := range old {
			if reflect.DeepEqual(o.ParentRef, p.ParentRef) {
				prev = o.Conditions
				break
			}
		}
		p.Conditions = append([]metav1.Condition(nil), p.Conditions...)
		for j := range p.Conditions {
			c := &p.Conditions[j]
			c.LastTransitionTime = now
			if pc := meta.FindStatusCondition(prev, c.Type); pc != nil && pc.Status == c.Status {
				c.LastTransitionTime = pc.LastTransitionTime
			}
		}
		out[i] = p
	}
	return out
}

// sameParents reports whether two lists of the mesh's entries say the
// same, lastTransitionTime aside.
func sameParents(a, b []gwv1.RouteParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ControllerName != b[i].ControllerName || !reflect.DeepEqual(a[i].ParentRef, b[i].ParentRef) ||
			len(a[i].Conditions) != len(b[i].Conditions) {
			return false
		}
		for _, c := range b[i].Conditions {
			ac := meta.FindStatusCondition(a[i].Conditions, c.Type)
			if ac == nil || ac.Status != c.Status || ac.Reason != c.Reason || ac.Message != c.Message ||
				ac.ObservedGeneration != c.ObservedGeneration {
				return false
			}
		}
	}
	return true
}
