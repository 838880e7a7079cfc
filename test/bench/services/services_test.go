package services

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestMeasureSmall measures the three rows briefly and checks
// correctness only: every row got its figures without an error over the
// path its kind says, and the table has every row and ratio.
func TestMeasureSmall(t *testing.T) {
	testutil.RequireRoot(t, "the services bench runs a lab: network namespaces, eBPF")
	dir := lab.RequireModuleBins(t, append([]string{"agentd", "ztunnel", "meshlab", "controller"}, lab.KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	o := Options{BinDir: dir, Duration: 500 * time.Millisecond, Rate: 200, Conns: 2,
		ConnectDuration: 300 * time.Millisecond, Concurrency: 2, Logger: testutil.TLogger(t, slog.LevelInfo)}
	r, err := Measure(ctx, o)
	if r != nil {
		var out strings.Builder
		WriteTable(&out, r)
		t.Log("\n" + out.String())
		checkTable(t, out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	wantPath := map[Kind]string{Direct: "direct", PodIP: "hbone+mtls", VIP: "hbone+mtls via svc"}
	for _, k := range []Kind{Direct, PodIP, VIP} {
		row := r.Row(k)
		if row == nil {
			t.Fatalf("no %s row", k)
		}
		if l := row.Latency; l.Scheduled != 100 || l.Count != 100 || l.Errors != 0 {
			t.Errorf("%s: latency %+v, want all 100 requests answered", k, l)
		}
		if c := row.Connect; c.Connections == 0 || c.Errors != 0 || c.PerSecond <= 0 || c.P50us <= 0 {
			t.Errorf("%s: new connections %+v, want some and no errors", k, c)
		}
		if row.Path != wantPath[k] {
			t.Errorf("%s: path %q, want %q", k, row.Path, wantPath[k])
		}
	}
}

func checkTable(t *testing.T, table string) {
	t.Helper()
	for _, want := range []string{"direct ", "mesh pod IP ", "mesh VIP ", "mesh pod IP / direct:", "mesh VIP / direct:", "mesh VIP / mesh pod IP:"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(table, "n/a") || strings.Contains(table, "failed") {
		t.Errorf("table has missing figures or failures")
	}
}
