package balance

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
// correctness only: every request of every row answered, round robin
// giving the slow replica its third, and the table has every row and
// ratio. (How much peak-EWMA wins is for `make bench` to print.)
func TestMeasureSmall(t *testing.T) {
	testutil.RequireRoot(t, "the balance bench runs a lab: network namespaces, eBPF")
	dir := lab.RequireModuleBins(t, append([]string{"agentd", "ztunnel", "meshlab", "controller"}, lab.KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	o := Options{BinDir: dir, Requests: 90, WarmUp: 9, Fast: time.Millisecond, Slow: 5 * time.Millisecond,
		Logger: testutil.TLogger(t, slog.LevelInfo)}
	r, err := Measure(ctx, o)
	if r != nil {
		var out strings.Builder
		WriteTable(&out, r)
		t.Log("\n" + out.String())
		for _, want := range []string{"direct ", "mesh round robin ", "mesh peak-EWMA ", "x"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("table lacks %q", want)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 3 {
		t.Fatalf("%d rows, want 3", len(r.Rows))
	}
	for _, row := range r.Rows {
		if row.Answered != 90 || row.P50 <= 0 || row.P50 > row.P99 {
			t.Errorf("%s: %+v, want 90 answered and ordered percentiles", row.Kind, row)
		}
	}
	if rr := r.Rows[RoundRobin]; rr.Slow != 30 {
		t.Errorf("round robin gave the slow replica %d of 90 requests, want 30", rr.Slow)
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{BinDir: "bin"}.withDefaults()
	if err != nil || o.Requests != 600 || o.WarmUp != 60 || o.Fast != 2*time.Millisecond || o.Slow != 40*time.Millisecond {
		t.Errorf("defaults: %+v %v", o, err)
	}
	for _, bad := range []Options{{}, {BinDir: "b", Requests: 20000}, {BinDir: "b", Fast: time.Second, Slow: time.Millisecond}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
