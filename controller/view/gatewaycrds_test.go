package view

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// chartCRDs is the chart's crds folder.
var chartCRDs = filepath.Join("..", "..", "deploy", "charts", "agentmesh", "crds")

// TestGatewayCRDsMatchModule: the chart's Gateway API CRDs are the
// experimental channel of the sigs.k8s.io/gateway-api version the
// controller is built with (the Go types it reads them into), byte for
// byte: `make gateway-crds` after a version change.
func TestGatewayCRDsMatchModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	version, modDir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if modDir == "" {
		t.Logf("module %s not downloaded: comparing versions only", version)
	}
	for _, r := range []string{"httproutes", "grpcroutes", "referencegrants"} {
		name := "gateway.networking.k8s.io_" + r + ".yaml"
		got, err := os.ReadFile(filepath.Join(chartCRDs, name))
		if err != nil {
			t.Errorf("%v (make gateway-crds)", err)
			continue
		}
		for _, want := range []string{"gateway.networking.k8s.io/bundle-version: " + version, "gateway.networking.k8s.io/channel: experimental"} {
			if !bytes.Contains(got, []byte(want)) {
				t.Errorf("%s lacks %q: run make gateway-crds", name, want)
			}
		}
		if modDir == "" {
			continue
		}
		want, err := os.ReadFile(filepath.Join(modDir, "config", "crd", "experimental", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the module's (%s): run make gateway-crds", name, modDir)
		}
	}
}
