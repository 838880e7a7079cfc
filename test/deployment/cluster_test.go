// Package deployment tests what users install: deploy/manifests/agentmesh.yaml
// (rendered from the Helm chart) applied to a real kube-apiserver (kubecp),
// the RBAC it grants proven sufficient and no broader, and the real
// controller binary running with exactly its service account's rights.
package deployment

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// Names the chart fixes (the controller's flags and the README rely on them).
const (
	meshNS       = "agentmesh-system"
	controllerSA = "agentmesh-controller"
	nodeSA       = "agentmesh-node"
	caSecret     = "agentmesh-ca" // the controller's --ca-secret default
	rootCM       = ca.RootConfigMap
	leaseName    = "agentmesh-controller"
	audience     = "agentmesh"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// kubeBinDir is bin/kube (or $KUBECP_BIN_DIR). Without the binaries the
// test fails under CI=true and skips otherwise.
func kubeBinDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBECP_BIN_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "bin", "kube")
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

// startCluster runs etcd, kube-apiserver and kube-controller-manager for
// the test and stops them (by PID) at cleanup.
func startCluster(t *testing.T) *kubecp.ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: kubeBinDir(t), StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

// readManifests splits the committed manifest file into objects.
func readManifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "deploy", "manifests", "agentmesh.yaml"))
	if err != nil {
		t.Fatalf("open manifests (make manifests): %v", err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decode manifests: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// apply server-side applies every object, in file order, as the admin.
func apply(ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return fmt.Errorf("discover resources: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("map %s: %w", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		_, err = ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "agentmesh-deployment-test", Force: true})
		if err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
		}
	}
	return nil
}
