package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// binDir is the module's bin/ (make build kube), or it skips (fails under
// CI=true) when something is missing.
func binDir(t *testing.T) string {
	t.Helper()
	root, err := lab.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin")
	need := []string{"agentd", "ztunnel", "meshlab", "controller"}
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

// TestMeasureSmall runs two rounds on two nodes and checks correctness
// only: every round produced its figures and the table has its rows.
func TestMeasureSmall(t *testing.T) {
	testutil.RequireRoot(t, "the policy bench runs a lab: network namespaces, eBPF")
	dir := binDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	r, err := Measure(ctx, Options{BinDir: dir, Nodes: 2, Rounds: 2, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
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

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
