package kubecp

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates every CustomResourceDefinition in dir's *.yaml files
// (a chart's crds/ folder; existing ones are left as they are) and waits
// until each is Established and its resource is listed by the apiserver.
func InstallCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	if err := InstallCRDsFS(ctx, cfg, os.DirFS(dir)); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}

// InstallCRDsFS is InstallCRDs for the *.yaml files at the top of fsys
// (for example a chart's crds/ folder embedded in the binary).
func InstallCRDsFS(ctx context.Context, cfg *rest.Config, fsys fs.FS) error {
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no crd files (%v)", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	slices.Sort(files)
	for _, f := range files {
		if err := installCRD(ctx, dyn, fsys, f); err != nil {
			return err
		}
	}
	return nil
}

func installCRD(ctx context.Context, dyn dynamic.Interface, fsys fs.FS, path string) error {
	raw, err := fs.ReadFile(fsys, path)
	if err != nil {
		return fmt.Errorf("read crd: %w", err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("parse crd %s: %w", path, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	if u.GetKind() != "CustomResourceDefinition" {
		return fmt.Errorf("%s: kind %q, want CustomResourceDefinition", path, u.GetKind())
	}
	if _, err := dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create crd %s: %w", u.GetName(), err)
	}
	served, err := servedResource(u)
	if err != nil {
		return fmt.Errorf("crd %s: %w", u.GetName(), err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(crdGVR).Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil || !established(got) {
			return false, nil
		}
		_, err = dyn.Resource(served).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("crd %s not established and served: %w", u.GetName(), err)
	}
	return nil
}

// servedResource is the GVR of the CRD's storage version.
func servedResource(u *unstructured.Unstructured) (schema.GroupVersionResource, error) {
	group, _, _ := unstructured.NestedString(u.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(u.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if name, _ := m["name"].(string); name != "" && m["storage"] == true {
			return schema.GroupVersionResource{Group: group, Version: name, Resource: plural}, nil
		}
	}
	return schema.GroupVersionResource{}, fmt.Errorf("no storage version")
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
