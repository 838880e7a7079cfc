package trafficstatus

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/statusloop"
	"github.com/agentmesh/agentmesh/controller/view"
)

// apply sets ts's Accepted condition at resourceVersion rv, the version
// it was checked against (statusloop.ApplyCondition: a policy changed or
// deleted and created again since is not written, and that is no error).
func apply(ctx context.Context, c dynamic.Interface, ts *view.TrafficState, rv string, cond metav1.Condition) (wrote bool, err error) {
	return statusloop.ApplyCondition(ctx, c, statusloop.Object{Resource: view.TrafficPolicyResource, Kind: view.KindTrafficPolicy,
		Namespace: ts.Namespace, Name: ts.Name, UID: ts.UID, ResourceVersion: rv}, FieldManager, cond)
}
