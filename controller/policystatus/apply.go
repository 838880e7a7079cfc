package policystatus

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/statusloop"
	"github.com/agentmesh/agentmesh/controller/view"
)

// apply sets ps's Accepted condition at resourceVersion rv, the version
// it was checked against (statusloop.ApplyCondition: a policy changed or
// deleted and created again since is not written, and that is no error).
func apply(ctx context.Context, c dynamic.Interface, ps *view.PolicyState, rv string, cond metav1.Condition) (wrote bool, err error) {
	return statusloop.ApplyCondition(ctx, c, statusloop.Object{Resource: view.PolicyResource, Kind: "AgentPolicy",
		Namespace: ps.Namespace, Name: ps.Name, UID: ps.UID, ResourceVersion: rv}, FieldManager, cond)
}

func typesUID(s string) types.UID { return types.UID(s) }
