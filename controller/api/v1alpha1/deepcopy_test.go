package v1alpha1_test

import (
	"reflect"
	"testing"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func fullPolicy() *v1alpha1.AgentPolicy {
	end := int32(90)
	return &v1alpha1.AgentPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Labels: map[string]string{"a": "b"}},
		Spec: v1alpha1.AgentPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Action:      v1alpha1.ActionAllow,
			Rules: []v1alpha1.Rule{{
				From: []v1alpha1.Source{{
					ServiceAccounts:   []string{"web"},
					Namespaces:        []string{"ops"},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"t": "a"}},
					PodSelector:       &metav1.LabelSelector{},
					IPBlocks:          []v1alpha1.IPBlock{{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
				}},
				Ports:   []v1alpha1.Port{{Port: 80, EndPort: &end, Protocol: v1alpha1.ProtocolTCP}},
				HTTP:    &v1alpha1.HTTPMatch{Methods: []string{"GET"}, Paths: []string{"/x"}},
				JSONRPC: &v1alpha1.JSONRPCMatch{Methods: []string{"m"}},
				MCP:     &v1alpha1.MCPMatch{Tools: []string{"t"}},
			}},
		},
		Status: v1alpha1.AgentPolicyStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionAccepted, Reason: v1alpha1.ReasonL7FieldsNotEnforced}}},
	}
}

// TestDeepCopy checks the copy is equal and shares nothing mutable.
func TestDeepCopy(t *testing.T) {
	orig := fullPolicy()
	cp := orig.DeepCopy()
	if !reflect.DeepEqual(orig, cp) {
		t.Fatal("copy differs")
	}
	r := &cp.Spec.Rules[0]
	*r.Ports[0].EndPort = 1
	r.From[0].IPBlocks[0].Except[0] = "x"
	r.From[0].NamespaceSelector.MatchLabels["t"] = "x"
	r.HTTP.Methods[0] = "x"
	r.MCP.Tools[0] = "x"
	cp.Status.Conditions[0].Reason = "x"
	if !reflect.DeepEqual(orig, fullPolicy()) {
		t.Error("mutating the copy changed the original")
	}
	list := &v1alpha1.AgentPolicyList{Items: []v1alpha1.AgentPolicy{*orig}}
	if obj := list.DeepCopyObject(); !reflect.DeepEqual(obj, list) {
		t.Error("list copy differs")
	}
}

func fullTrafficPolicy() *v1alpha1.TrafficPolicy {
	n := func(v int32) *int32 { return &v }
	d := func(s string) *v1alpha1.Duration { v := v1alpha1.Duration(s); return &v }
	return &v1alpha1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "shop"},
		Spec: v1alpha1.TrafficPolicySpec{
			TargetRefs:       []v1alpha1.LocalPolicyTargetReference{{Kind: "Service", Name: "search"}},
			LoadBalancer:     &v1alpha1.LoadBalancer{Algorithm: v1alpha1.ConsistentHash, Hash: &v1alpha1.HashKey{Header: "x"}},
			SessionAffinity:  &v1alpha1.SessionAffinity{Key: v1alpha1.HashKey{ContextID: true}},
			Timeouts:         &v1alpha1.Timeouts{Connect: d("1s"), FirstByte: d("2s"), Idle: d("3s"), Total: d("4s")},
			RetryBudget:      &v1alpha1.RetryBudget{Percent: n(20), MinRetriesPerSecond: n(10)},
			CircuitBreaker:   &v1alpha1.CircuitBreaker{MaxConnections: n(1), MaxPendingRequests: n(2), MaxRequests: n(3), MaxRequestsPerEndpoint: n(4)},
			OutlierDetection: &v1alpha1.OutlierDetection{ConsecutiveFailures: n(5), BaseEjectionTime: d("30s"), MaxEjectionTime: d("5m"), MaxEjectedPercent: n(10)},
			RateLimit: &v1alpha1.RateLimit{
				PerEndpoint: &v1alpha1.TokenBucket{RequestsPerSecond: 1, Burst: n(2)},
				PerSource:   &v1alpha1.TokenBucket{RequestsPerSecond: 3},
				Tools:       []v1alpha1.ToolRateLimit{{Name: "search", RequestsPerSecond: 4, Burst: n(5)}},
			},
		},
		Status: v1alpha1.TrafficPolicyStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionAccepted, Reason: v1alpha1.ReasonConflicted}}},
	}
}

// TestDeepCopyTraffic checks the copy is equal and shares nothing mutable.
func TestDeepCopyTraffic(t *testing.T) {
	orig := fullTrafficPolicy()
	cp := orig.DeepCopy()
	if !reflect.DeepEqual(orig, cp) {
		t.Fatal("copy differs")
	}
	s := &cp.Spec
	s.TargetRefs[0].Name = "x"
	s.LoadBalancer.Hash.Header = "y"
	*s.Timeouts.Idle = "9s"
	*s.RetryBudget.Percent = 1
	*s.CircuitBreaker.MaxRequests = 9
	*s.OutlierDetection.MaxEjectionTime = "9m"
	*s.RateLimit.PerEndpoint.Burst = 9
	*s.RateLimit.Tools[0].Burst = 9
	cp.Status.Conditions[0].Reason = "x"
	if !reflect.DeepEqual(orig, fullTrafficPolicy()) {
		t.Error("mutating the copy changed the original")
	}
	list := &v1alpha1.TrafficPolicyList{Items: []v1alpha1.TrafficPolicy{*orig}}
	if obj := list.DeepCopyObject(); !reflect.DeepEqual(obj, list) {
		t.Error("list copy differs")
	}
}

func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{&v1alpha1.AgentPolicy{}, &v1alpha1.TrafficPolicy{}} {
		kind := reflect.TypeOf(obj).Elem().Name()
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 || gvks[0] != v1alpha1.SchemeGroupVersion.WithKind(kind) {
			t.Fatalf("ObjectKinds(%s) = %v, %v", kind, gvks, err)
		}
		if !s.Recognizes(v1alpha1.SchemeGroupVersion.WithKind(kind + "List")) {
			t.Errorf("%sList not registered", kind)
		}
	}
}

func TestParseAnnotations(t *testing.T) {
	for in, want := range map[string]v1alpha1.MTLSMode{"": v1alpha1.MTLSPermissive, "STRICT": v1alpha1.MTLSStrict, "PERMISSIVE": v1alpha1.MTLSPermissive} {
		if got, err := v1alpha1.ParseMTLSMode(in); err != nil || got != want {
			t.Errorf("ParseMTLSMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := v1alpha1.ParseMTLSMode("strict"); err == nil {
		t.Error("ParseMTLSMode(strict) accepted")
	}
	if got, err := v1alpha1.ParseDefaultAction(""); err != nil || got != v1alpha1.ActionAllow {
		t.Errorf("ParseDefaultAction(\"\") = %q, %v", got, err)
	}
	if _, err := v1alpha1.ParseDefaultAction("allow"); err == nil {
		t.Error("ParseDefaultAction(allow) accepted")
	}
}
