// Package deploy carries the chart's CustomResourceDefinitions and the
// rendered manifest inside the binaries that need them (the lab installs
// and applies them), so those run from any directory, not only from a
// checkout.
package deploy

import (
	"embed"
	"io/fs"
)

//go:embed charts/agentmesh/crds/*.yaml
var crds embed.FS

// Manifest is manifests/agentmesh.yaml: the chart rendered with its
// defaults plus the Namespace.
//
//go:embed manifests/agentmesh.yaml
var Manifest []byte

// CRDs holds the chart's CustomResourceDefinitions (charts/agentmesh/crds/*.yaml)
// at its top level.
func CRDs() fs.FS {
	sub, err := fs.Sub(crds, "charts/agentmesh/crds")
	if err != nil {
		panic(err) // the path is a constant embedded above
	}
	return sub
}
