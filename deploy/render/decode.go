package main

import (
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// kinds are client-go's plus CustomResourceDefinition (the chart's crds/).
var kinds = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}()

// strict decodes YAML into the typed Kubernetes objects, failing on unknown
// or duplicate fields (a misspelt key would otherwise be dropped silently).
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, kinds, kinds,
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
