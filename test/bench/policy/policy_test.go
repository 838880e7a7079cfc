package policy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestMeasureSmall runs two rounds on two nodes and checks correctness
// only: every round produced its figures and the table has its rows.
func TestMeasureSmall(t *testing.T) {
	testutil.RequireRoot(t, "the policy bench runs a lab: network namespaces, eBPF")
	dir := lab.RequireModuleBins(t, append([]string{"agentd", "ztunnel", "meshlab", "controller"}, lab.KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	r, err := Measure(ctx, Options{BinDir: dir, Nodes: 2, Rounds: 2, Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string][]time.Duration{"create": r.Create, "informer": r.Informer, "first": r.First, "every": r.Every, "restored": r.Restored} {
		if len(d) != 2 {
			t.Errorf("%s: %d figures, want 2", name, len(d))
		}
	}
	for i := range r.Every {
		if r.First[i] > r.Every[i] || r.Every[i] <= 0 {
			t.Errorf("round %d: first node %v, every node %v", i, r.First[i], r.Every[i])
		}
	}
	var out bytes.Buffer
	WriteTable(&out, r)
	t.Log("\n" + out.String())
	if !strings.Contains(out.String(), "apply -> every node enforcing") {
		t.Errorf("table lacks the enforcement row:\n%s", out.String())
	}
}
