package meshlab

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	delete(want, "sa/planner") // counted with the replica rows below
	text := testDemo(t, want, "--kube", "--kube-bin-dir", kube)
	used := checkServiceDemo(t, text)
	if got := strings.Count(text, "sa/planner"); got != 4+used {
		t.Errorf("sa/planner appears %d times, want %d (the calls and the policy step) + %d (the replicas called)", got, 4, used)
	}
}

var (
	replicaRow = regexp.MustCompile(`(?m)^data-validator-\S+\s+n\d\s+(\d+)/(\d+)\s+(\d+) of (\d+)\s+(\S+)\s+(\S+)$`)
	killLine   = regexp.MustCompile(`(?m)^(\d+) calls, (\d+) failed;`)
)

// checkServiceDemo: the calls by name reached the three replicas over
// both families, each over mTLS (or, for a replica on the caller's node,
// the same-node path) with the identities each side verified,
// and none failed while a replica was killed. It returns how many
// replicas were called.
func checkServiceDemo(t *testing.T, text string) int {
	t.Helper()
	rows := replicaRow.FindAllStringSubmatch(text, -1)
	if len(rows) != 3 {
		t.Fatalf("%d replica rows, want 3", len(rows))
	}
	var v4, v6, used int
	for _, r := range rows {
		a, _ := strconv.Atoi(r[1])
		b, _ := strconv.Atoi(r[2])
		mtls, _ := strconv.Atoi(r[3])
		v4, v6 = v4+a, v6+b
		if a+b == 0 {
			continue
		}
		used++
		if mtls != a+b || r[5] != "spiffe://cluster.local/ns/agents/sa/data-validator" || r[6] != "spiffe://cluster.local/ns/agents/sa/planner" {
			t.Errorf("replica row %q: want every call over mTLS (or joined on the node), data-validator's and planner's identities", r[0])
		}
	}
	if v4 != byNameCalls/2 || v6 != byNameCalls/2 || used < 2 {
		t.Errorf("calls by name: %d over IPv4, %d over IPv6, %d replicas used; want %d each, spread", v4, v6, used, byNameCalls/2)
	}
	k := killLine.FindStringSubmatch(text)
	if k == nil || k[2] != "0" || k[1] == "0" {
		t.Errorf("calls through the kill: %q, want some and none failed", k)
	}
	return used
}

// demoWant is how often the call table's markers appear, with planner
// named as a verified caller planners times.
func demoWant(planners int) map[string]int {
	return map[string]int{
		"yes (both ends)":               2, // the two cross-node calls between enrolled agents
		"local (same node, no network)": 1, // and the same-node one
		"sa/planner":                    planners,
		"PLAINTEXT":                     1, // only the call to legacy-batch
		"encrypted":                     2, // both cross-node mesh calls
		"nothing left":                  1,
	}
}

// testDemo runs the demo with extra flags, checks its report and returns
// it.
func testDemo(t *testing.T, want map[string]int, flags ...string) string {
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
	return text
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
