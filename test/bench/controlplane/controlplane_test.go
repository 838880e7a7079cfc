package controlplane

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// binDir is the module's bin/ with controller and kube/, or it skips (fails
// under CI=true) when they are missing.
func binDir(t *testing.T) string {
	t.Helper()
	root, err := lab.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin")
	need := []string{"controller"}
	for _, b := range kubecp.Binaries {
		need = append(need, filepath.Join("kube", b))
	}
	for _, b := range need {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := "missing " + filepath.Join(dir, b) + " (run make build kube)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// TestMeasureSmall runs a small benchmark and checks only correctness:
// every node saw every change, the controller acked them all, and the
// memory figures are there. No timing is asserted.
func TestMeasureSmall(t *testing.T) {
	dir := binDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	o := Options{BinDir: dir, Nodes: 3, Namespaces: 2, Services: 10, Pods: 100, Changes: 3,
		Settle: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
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
	var out bytes.Buffer
	WriteTable(&out, r)
	t.Log("\n" + out.String())
	if !strings.Contains(out.String(), "every node received+acked") {
		t.Errorf("table lacks the propagation row:\n%s", out.String())
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
