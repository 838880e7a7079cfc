package kubecp

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"k8s.io/apimachinery/pkg/util/wait"
)

// kubeBinDir is bin/kube at the repo root (or $KUBECP_BIN_DIR). Without the
// binaries the test fails under CI=true and skips otherwise.
func kubeBinDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBECP_BIN_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "bin", "kube")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := "kubernetes binaries missing (run `make kube` first): " + err.Error()
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// startControlPlane starts a control plane for the test and stops it at
// cleanup, printing the ends of the components' logs when the test failed
// (or KUBECP_TEST_LOGS is set).
func startControlPlane(t *testing.T, o Options) *ControlPlane {
	t.Helper()
	o.BinDir = kubeBinDir(t)
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	o.Logger = testutil.TLogger(t, slog.LevelInfo)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Logf("control plane at %s ready in %v", c.URL(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KUBECP_TEST_LOGS") != "" {
			for _, p := range c.procs {
				t.Logf("%s log tail:\n%s", p.name, p.logTail())
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return c
}

// eventually polls cond every 100ms for up to 30s; cond returns (done, err)
// and an error ends the wait at once.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
