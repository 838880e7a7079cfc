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
	want["nothing left"] = 2   // the agents part runs a second lab
	text := testDemo(t, want, "--kube", "--kube-bin-dir", kube)
	used := checkServiceDemo(t, text)
	checkAgentsDemo(t, text)
	checkTrafficDemo(t, text)
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

var (
	statEdge = regexp.MustCompile(`(?m)^\s+agentic/(\S+)\s+agentic/(\S+)\s+.*\s(\d+\.\d)\s+(\d+\.\d+)%\s+(\S+)\s+(\S+)\s+(\S+)$`)
	spanLine = regexp.MustCompile(`(?m)^\s+[│ ]*[├└]─ (client|server) +(caller's|callee's) ztunnel +agentic/(\S+) -> (\S+) +(\S+)(?: (\S+))?(?: (\S+))? +(\d{3}) `)
)

// checkAgentsDemo: the MCP tool calls allowed and refused by the policy
// with the deciding policy named, the chain's answer through both agents,
// meshctl stat rows with every request a success and its percentiles, and
// the trace tree with client and server spans of both hops.
func checkAgentsDemo(t *testing.T, text string) {
	t.Helper()
	for marker, n := range map[string]int{
		"tools/call charge  allowed: \"billing: charge(x)\"": 2,
		"tools/call refund  refused: ":                       1,
		"request denied by policy: spiffe://cluster.local/ns/agentic/sa/data-validator calling tools/call refund, policy agentic/validator-charges (no-allow-match)": 1,
		`answer: "data-validator: invoice 42; billing: charge(invoice 42)"`:                                                                                          1,
	} {
		if got := strings.Count(text, marker); got != n {
			t.Errorf("%q appears %d times, want %d", marker, got, n)
		}
	}
	edges := map[string]bool{}
	for _, m := range statEdge.FindAllStringSubmatch(text, -1) {
		edges[m[1]+"->"+m[2]] = true
		if m[4] != "100.00" || m[5] == "-" || m[7] == "-" {
			t.Errorf("meshctl stat row %q: want every request a success and p50..p99", m[0])
		}
	}
	if !edges["planner->data-validator"] || !edges["data-validator->billing"] {
		t.Errorf("meshctl stat edges %v: want planner->data-validator and data-validator->billing", edges)
	}
	seen := map[string]bool{}
	for _, m := range spanLine.FindAllStringSubmatch(text, -1) {
		seen[m[1]+" "+m[3]+" "+strings.TrimSpace(m[5]+" "+m[6]+" "+m[7])] = true
	}
	for _, want := range []string{"client planner POST", "server planner POST message/send", "client data-validator POST", "server data-validator POST tools/call charge"} {
		if !seen[want] {
			t.Errorf("trace tree: no span %q (have %v)", want, seen)
		}
	}
}

var (
	canaryLine = regexp.MustCompile(`planner sends 200 A2A messages to data-validator: v1 answered (\d+), v2 answered (\d+) \(([\d.]+) %\), (\d+) failed`)
	failLine   = regexp.MustCompile(`planner sends 20 messages: v1 answered (\d+), v2 answered (\d+), (\d+) failed`)
	ejectLine  = regexp.MustCompile(`n1's ztunnel logged at t=[\d.]+s: endpoint ejected: \S+ of agentic/data-validator \(policy agentic/dv-resilience\)`)
	epRow      = regexp.MustCompile(`(?m)^\s+\S+\s+agentic/(data-validator\S*)\s+true\s+.*\s(true|false)\s+spiffe://`)
	backLine   = regexp.MustCompile(`the next 20 messages: v1 answered (\d+), v2 answered (\d+), (\d+) failed`)
)

// checkTrafficDemo: the canary's split follows the route's weights (90/10
// then 50/50, within wide bounds: 200 messages each) with nothing failed
// and each change in force on both nodes; the failing v2 fails exactly
// the 3 messages the policy's consecutiveFailures allow before it is
// ejected, meshctl shows it ejected and v1 not, and once healed it gets
// its share again with nothing failing.
func checkTrafficDemo(t *testing.T, text string) {
	t.Helper()
	canary := canaryLine.FindAllStringSubmatch(text, -1)
	if len(canary) != 2 {
		t.Fatalf("%d canary lines, want 2", len(canary))
	}
	// Bounds of about four standard deviations of 200 draws (the e2e
	// test holds the split to ±2 points over 10 000).
	for i, want := range []struct{ share, within float64 }{{10, 8}, {50, 15}} {
		share, _ := strconv.ParseFloat(canary[i][3], 64)
		if canary[i][4] != "0" || share < want.share-want.within || share > want.share+want.within {
			t.Errorf("canary step %d: %q, want %.0f ± %.0f %% to v2 and none failed", i+1, canary[i][0], want.share, want.within)
		}
	}
	if got := strings.Count(text, "in force in every node's tunnel: n1 after"); got != 2 {
		t.Errorf("%d route changes reported in force, want 2", got)
	}
	if m := failLine.FindStringSubmatch(text); m == nil || m[1] != "17" || m[2] != "0" || m[3] != "3" {
		t.Errorf("while v2 failed: %q, want v1 17, v2 0, 3 failed", m)
	}
	if !ejectLine.MatchString(text) {
		t.Error("no ejection line of agentic/data-validator under dv-resilience")
	}
	ejected := map[string]string{}
	for _, m := range epRow.FindAllStringSubmatch(text, -1) {
		ejected[m[1]] = m[2]
	}
	if ejected["data-validator"] != "false" || ejected["data-validator-v2"] != "true" {
		t.Errorf("meshctl service endpoints rows: ejected %v, want data-validator-v2 only", ejected)
	}
	if m := backLine.FindStringSubmatch(text); m == nil || m[3] != "0" || m[2] == "0" {
		t.Errorf("after v2 healed: %q, want both answering, none failed", m)
	}
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
