package deploy

import (
	"io/fs"
	"os"
	"testing"
)

// TestEveryCRDEmbedded: a CRD added to the chart under another extension
// would be missing from the lab's clusters; the pattern must cover them all.
func TestEveryCRDEmbedded(t *testing.T) {
	entries, err := os.ReadDir("charts/agentmesh/crds")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Name() == "README.md" {
			continue
		}
		n++
		if _, err := fs.Stat(CRDs(), e.Name()); err != nil {
			t.Errorf("%s is not embedded: %v", e.Name(), err)
		}
	}
	if n == 0 || len(Manifest) == 0 {
		t.Errorf("%d crds, manifest of %d bytes: want some of both", n, len(Manifest))
	}
}
