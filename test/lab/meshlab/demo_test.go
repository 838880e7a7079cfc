package meshlab

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestDemo runs `meshlab demo` against freshly built binaries (needs root).
func TestDemo(t *testing.T) { testDemo(t, demoWant(3), "--kube=false") }

// TestDemoKube runs `meshlab demo --kube`: the same calls between Pods
// made through the API, configured by the controller (needs root and
// bin/kube from `make kube`).
func TestDemoKube(t *testing.T) {
	root, err := lab.ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kube := filepath.Join(root, "bin", "kube")
	if _, err := os.Stat(filepath.Join(kube, "kube-apiserver")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("demo --kube needs %s (make kube): %v", kube, err)
		}
		t.Skipf("demo --kube needs %s (make kube): %v", kube, err)
	}
	// Kubernetes mode adds the policy step: planner's call is allowed
	// (a fourth sa/planner), billing's refused by the policy.
	want := demoWant(4)
	want["denied spiffe://cluster.local/ns/agents/sa/billing: no-allow-match agents/only-planner"] = 1
	want["refused ("] = 1
	want["enforced on the destination's node"] = 1
	testDemo(t, want, "--kube", "--kube-bin-dir", kube)
}

// demoWant is how often the call table's markers appear, with planner
// named as a verified caller planners times.
func demoWant(planners int) map[string]int {
	return map[string]int{
		"yes (both ends)": 3, // the three calls between enrolled agents
		"sa/planner":      planners,
		"PLAINTEXT":       1, // only the call to legacy-batch
		"encrypted":       2, // both cross-node mesh calls
		"nothing left":    1,
	}
}

// testDemo runs the demo with extra flags and checks its report.
func testDemo(t *testing.T, want map[string]int, flags ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := labBinaries(ctx, t, "the demo runs a lab")
	var out bytes.Buffer
	if err := Run(ctx, append([]string{"demo", "--bin-dir", bin}, flags...), &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for marker, n := range want {
		if got := strings.Count(text, marker); got != n {
			t.Errorf("%q appears %d times, want %d", marker, got, n)
		}
	}
}

// labBinaries builds the mesh binaries for a test that runs a lab (which
// needs root: without it the test is skipped, or fails when CI=true).
func labBinaries(ctx context.Context, t *testing.T, why string) string {
	t.Helper()
	testutil.RequireRoot(t, why)
	bin := t.TempDir()
	if err := lab.BuildBinaries(ctx, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}
