package view

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// fakeDynamic is a fake dynamic client serving AgentPolicies,
// TrafficPolicies and the Gateway API resources the mesh reads.
func fakeDynamic(t *testing.T, objs ...runtime.Object) dynamic.Interface {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, gwv1.Install, gwv1beta1.Install} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{PolicyResource: "AgentPolicyList", HTTPRouteResource: "HTTPRouteList",
			GRPCRouteResource: "GRPCRouteList", ReferenceGrantResource: "ReferenceGrantList",
			TrafficPolicyResource: "TrafficPolicyList"}, objs...)
}

// sinkFuncs is a Sink of two funcs; a nil one drops its events.
type sinkFuncs struct {
	snapshot    func(*Snapshot)
	nodeDeleted func(string)
}

func (f sinkFuncs) Snapshot(s *Snapshot) {
	if f.snapshot != nil {
		f.snapshot(s)
	}
}

func (f sinkFuncs) NodeDeleted(node string) {
	if f.nodeDeleted != nil {
		f.nodeDeleted(node)
	}
}
