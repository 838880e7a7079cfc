package v1alpha1_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"sigs.k8s.io/yaml"
)

// schemaNode is the part of an OpenAPI schema this test reads.
type schemaNode struct {
	Properties map[string]*schemaNode `json:"properties"`
	Items      *schemaNode            `json:"items"`
}

type crdFile struct {
	Spec struct {
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema *schemaNode `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// TestSchemaCoversGoTypes fails when a JSON field of the Go types is not in
// the CRD's schema, e.g. after editing the types without `make crds`.
func TestSchemaCoversGoTypes(t *testing.T) {
	for _, tc := range []struct {
		file      string
		typ       reflect.Type
		minFields int // the fields of the types when the case was written
	}{
		{"agentmesh.io_agentpolicies.yaml", reflect.TypeFor[v1alpha1.AgentPolicy](), 25},
		{"agentmesh.io_trafficpolicies.yaml", reflect.TypeFor[v1alpha1.TrafficPolicy](), 40},
	} {
		t.Run(tc.typ.Name(), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "charts", "agentmesh", "crds", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var crd crdFile
			if err := yaml.Unmarshal(raw, &crd); err != nil {
				t.Fatalf("parse crd: %v", err)
			}
			if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
				t.Fatalf("versions = %+v, want only v1alpha1", crd.Spec.Versions)
			}
			n := 0
			walk(t, "", tc.typ, crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &n)
			if n < tc.minFields {
				t.Errorf("checked only %d fields", n)
			}
		})
	}
}

// walk checks that every JSON field of typ (inline fields flattened) is a
// property of s, descending into this package's types only.
func walk(t *testing.T, path string, typ reflect.Type, s *schemaNode, n *int) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		if typ.Kind() == reflect.Slice {
			if s == nil || s.Items == nil {
				t.Errorf("%s: no items schema", path)
				return
			}
			s = s.Items
		}
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[v1alpha1.AgentPolicy]().PkgPath() {
		return
	}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || f.Anonymous {
			continue // inline TypeMeta/ObjectMeta: metadata, apiVersion, kind checked below
		}
		*n++
		child, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s.%s: Go field %s not in the CRD schema (run make crds)", path, name, f.Name)
			continue
		}
		walk(t, path+"."+name, f.Type, child, n)
	}
	if path == "" {
		for _, p := range []string{"apiVersion", "kind", "metadata"} {
			if _, ok := s.Properties[p]; !ok {
				t.Errorf("top-level %s missing", p)
			}
		}
	}
}
