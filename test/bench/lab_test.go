package bench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// requireLab skips (or, with CI=true, fails) unless a lab can run here.
func requireLab(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "the lab needs root"
	} else if _, err := lab.CgroupRoot(); err != nil {
		reason = "the lab needs cgroup2: " + err.Error()
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// buildMesh builds agentd and ztunnel into a temporary directory.
func buildMesh(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := lab.ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/agentd", "./cmd/ztunnel")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agentd and ztunnel: %v\n%s", err, out)
	}
	return dir
}

// testOptions is a small run whose client and server are this test binary.
func testOptions(t *testing.T, binDir string, scenarios []Scenario) Options {
	return Options{BinDir: binDir, Duration: 500 * time.Millisecond, Rate: 200, Conns: 2, Size: 1024,
		BulkBytes: 8 << 20, Logger: testutil.TLogger(t, slog.LevelInfo),
		Command: []string{os.Args[0], helperArg}, scenarios: scenarios}
}

// checkResults asserts that every scenario got every answer and every
// byte, over the path its name says; no timing is asserted.
func checkResults(t *testing.T, opts Options, results []Result, err error) {
	t.Helper()
	var table strings.Builder
	WriteTable(&table, opts, results)
	writeCost(&table, opts, results)
	t.Logf("\n%s", table.String())
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	if len(results) != len(opts.scenarios) {
		t.Fatalf("%d results for %d scenarios", len(results), len(opts.scenarios))
	}
	for _, r := range results {
		l := r.Latency
		if l.Scheduled != 100 || l.Count != l.Scheduled || l.Errors != 0 {
			t.Errorf("%s: latency %+v, want all 100 requests answered", r.Scenario.Name, l)
		}
		if r.Bulk.Bytes != opts.BulkBytes {
			t.Errorf("%s: bulk moved %d bytes, want %d", r.Scenario.Name, r.Bulk.Bytes, opts.BulkBytes)
		}
		switch {
		case r.Scenario.HAProxy:
			if r.Path != "haproxy+mtls" {
				t.Errorf("%s: path %q, want haproxy+mtls", r.Scenario.Name, r.Path)
			}
		case (r.Path == "direct") == r.Scenario.Mesh:
			t.Errorf("%s: path %q", r.Scenario.Name, r.Path)
		}
		proxied := r.Scenario.Mesh || r.Scenario.HAProxy
		if proxied != (r.Cost != nil) {
			t.Errorf("%s: proxy cost %+v, want one for proxied scenarios only", r.Scenario.Name, r.Cost)
		}
		if r.Cost != nil && (r.Cost.LoadRSS <= 0 || r.Cost.CPUPerGB < 0) {
			t.Errorf("%s: proxy cost %+v: no RSS under load, or negative CPU", r.Scenario.Name, r.Cost)
		}
	}
}

// TestMeasureDirectOnLab runs the direct scenarios on a lab without the
// mesh, over IPv4 and IPv6.
func TestMeasureDirectOnLab(t *testing.T) {
	requireLab(t)
	for _, ipv6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[ipv6], func(t *testing.T) {
			opts := testOptions(t, t.TempDir(), []Scenario{Scenarios[0], Scenarios[1]})
			opts.IPv6 = ipv6
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			results, err := Measure(ctx, opts)
			checkResults(t, opts, results, err)
		})
	}
}

// TestMeasureOnLab runs every scenario with the real agentd and ztunnel
// and checks that mesh traffic went through ztunnel.
func TestMeasureOnLab(t *testing.T) {
	requireLab(t)
	opts := testOptions(t, buildMesh(t), Scenarios)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := Measure(ctx, opts)
	checkResults(t, opts, results, err)
}
