package controlplane

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

// TestMeasureSmall runs a small benchmark and checks only correctness:
// every node saw every change, the controller acked them all, a burst and
// a controller restart reached every node, and the memory, bytes and CPU
// figures are there. No timing is asserted.
func TestMeasureSmall(t *testing.T) {
	dir := lab.RequireModuleBins(t, append([]string{"controller"}, lab.KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	o := Options{BinDir: dir, Nodes: 3, Namespaces: 2, Services: 10, Pods: 100, Changes: 3,
		Settle: 200 * time.Millisecond, Logger: testutil.TLogger(t, slog.LevelInfo)}
	r, err := Measure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Mesh) != 3 || len(r.First) != 3 || len(r.Informer) != 3 || len(r.Update) != 3 || r.Acked != 3 {
		t.Errorf("measured %d/%d/%d changes, %d acked; want 3 each", len(r.Mesh), len(r.Informer), len(r.Update), r.Acked)
	}
	if r.Workloads != 100 || r.Endpoints != 100 {
		t.Errorf("node view: %d workloads, %d ready endpoints; want 100, 100", r.Workloads, r.Endpoints)
	}
	if r.RSS == 0 || r.HeapInuse == 0 || r.RSSAfter == 0 || r.HeapInuseAfter == 0 {
		t.Errorf("memory: rss %d heap %d, after: rss %d heap %d", r.RSS, r.HeapInuse, r.RSSAfter, r.HeapInuseAfter)
	}
	if r.BurstLast <= 0 || r.BurstVersions <= 0 || r.RestartAll <= 0 || r.RestartReady <= 0 {
		t.Errorf("burst: last %v, %.1f versions per node; restart: ready %v, every node %v", r.BurstLast, r.BurstVersions, r.RestartReady, r.RestartAll)
	}
	if r.FullBytes <= 0 || r.ChangeBytes <= 0 || r.InitialCPU.Receivers <= 0 {
		t.Errorf("bytes per node: full %.0f, per change %.0f; receivers' CPU %v", r.FullBytes, r.ChangeBytes, r.InitialCPU.Receivers)
	}
	var out bytes.Buffer
	WriteTable(&out, r)
	t.Log("\n" + out.String())
	if !strings.Contains(out.String(), "every node received+acked") {
		t.Errorf("table lacks the propagation row:\n%s", out.String())
	}
}
