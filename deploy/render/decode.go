package main

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
)

// strict decodes YAML into the typed Kubernetes objects, failing on unknown
// or duplicate fields (a misspelt key would otherwise be dropped silently).
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// decodeStrict checks one rendered manifest.
func decodeStrict(name, content string) error {
	obj, gvk, err := strict.Decode([]byte(content), nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if obj == nil || gvk.Kind == "" {
		return fmt.Errorf("%s: no kind", name)
	}
	return nil
}
