package v1alpha1_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

var (
	crdGVR     = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	policyGVR  = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}
	trafficGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}
)

// crdCase is a spec and what the apiserver must say about it: wantErr nil
// means accepted, else every substring must be in the error. Names are
// the object names, so they must be DNS labels.
type crdCase struct {
	name    string
	spec    string
	wantErr []string
}

// TestCRDInAPIServer loads the CRDs into a real kube-apiserver and checks
// what they accept and refuse, and with which messages.
func TestCRDInAPIServer(t *testing.T) {
	dyn := startAPIServer(t)
	installCRD(t, dyn, policyGVR)
	installCRD(t, dyn, trafficGVR)
	t.Run("AgentPolicy", func(t *testing.T) {
		runCases(t, dyn, policyGVR, "AgentPolicy", crdCases, checkStoredPolicy)
	})
	t.Run("TrafficPolicy", func(t *testing.T) {
		runCases(t, dyn, trafficGVR, "TrafficPolicy", trafficCases, checkStoredTraffic)
	})
}

// runCases creates one object of kind per case and checks the outcome;
// check compares an accepted object read back with the spec sent.
func runCases(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, kind string, cases []crdCase,
	check func(t *testing.T, u *unstructured.Unstructured, spec string)) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := create(t, dyn, gvr, kind, tc.name, tc.spec)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("valid %s refused: %v", kind, err)
				}
				u, err := dyn.Resource(gvr).Namespace("default").Get(context.Background(), tc.name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				check(t, u, tc.spec)
				return
			}
			if err == nil {
				t.Fatalf("invalid %s accepted", kind)
			}
			t.Logf("refused: %v", err)
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\ndoes not contain %q", err, want)
				}
			}
		})
	}
}

// kubeBinDir is bin/kube at the repo root; without it the test fails under
// CI=true and skips otherwise.
func kubeBinDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "bin", "kube"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range kubecp.Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := "kubernetes binaries missing (run `make kube` first): " + err.Error()
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

func startAPIServer(t *testing.T) dynamic.Interface {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: kubeBinDir(t), StateDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	dyn, err := dynamic.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// installCRD creates the CRD of gvr from the chart and waits until it is
// Established and serving.
func installCRD(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource) {
	t.Helper()
	name := gvr.Resource + "." + gvr.Group
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "charts", "agentmesh", "crds", gvr.Group+"_"+gvr.Resource+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("parse crd: %v", err)
	}
	ctx := context.Background()
	if _, err := dyn.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create crd %s: %v", name, err)
	}
	poll(t, name+" established", func(ctx context.Context) (bool, error) {
		u, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return established(u), nil
	})
	poll(t, gvr.Resource+" served", func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func create(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, kind, name, spec string) error {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "agentmesh.io/v1alpha1",
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": "default"},
		"spec":       s,
	}}
	_, err := dyn.Resource(gvr).Namespace("default").Create(context.Background(), u, metav1.CreateOptions{})
	return err
}

func poll(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// checkStoredPolicy reads the policy back as the Go type: nothing the
// test sent was pruned, and defaults (protocol TCP) were applied.
func checkStoredPolicy(t *testing.T, u *unstructured.Unstructured, spec string) {
	t.Helper()
	var got v1alpha1.AgentPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &got, true); err != nil {
		t.Fatalf("stored object does not fit the Go type: %v", err)
	}
	var want v1alpha1.AgentPolicySpec
	if err := json.Unmarshal([]byte(spec), &want); err != nil {
		t.Fatal(err)
	}
	for i := range want.Rules {
		for j := range want.Rules[i].Ports {
			if p := &want.Rules[i].Ports[j]; p.Protocol == "" {
				p.Protocol = v1alpha1.ProtocolTCP
			}
		}
	}
	if diff := cmp.Diff(want, got.Spec); diff != "" {
		t.Errorf("stored spec differs (-sent +stored):\n%s", diff)
	}
}

// checkStoredTraffic reads the TrafficPolicy back as the Go type: nothing
// the test sent was pruned, and the targetRefs defaults (group "", kind
// Service) were applied.
func checkStoredTraffic(t *testing.T, u *unstructured.Unstructured, spec string) {
	t.Helper()
	var got v1alpha1.TrafficPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &got, true); err != nil {
		t.Fatalf("stored object does not fit the Go type: %v", err)
	}
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs")
	for i, r := range refs {
		if g, ok := r.(map[string]any)["group"]; g != "" || !ok {
			t.Errorf("stored targetRefs[%d].group = %v, %v: want \"\" (the default)", i, g, ok)
		}
	}
	var want v1alpha1.TrafficPolicySpec
	if err := json.Unmarshal([]byte(spec), &want); err != nil {
		t.Fatal(err)
	}
	for i := range want.TargetRefs {
		if r := &want.TargetRefs[i]; r.Kind == "" {
			r.Kind = "Service"
		}
	}
	if diff := cmp.Diff(want, got.Spec); diff != "" {
		t.Errorf("stored spec differs (-sent +stored):\n%s", diff)
	}
}
