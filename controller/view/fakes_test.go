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
