package view

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// fakeDynamic is a fake dynamic client serving AgentPolicies.
func fakeDynamic(t *testing.T, policies ...runtime.Object) dynamic.Interface {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{PolicyResource: "AgentPolicyList"}, policies...)
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
