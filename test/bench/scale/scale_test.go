package scale

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestMeasureSmall enrolls a few pods and checks what the bench reports
// is consistent (every pod set up, before and after a ztunnel restart;
// ztunnel's fds grew by what the pods hold); and that asking for more
// pods than ztunnel's fd budget carries fails at once with the reason.
// (How long and how much per pod is for `make bench` to print.)
func TestMeasureSmall(t *testing.T) {
	testutil.RequireRoot(t, "the scale bench runs a lab: network namespaces, eBPF")
	dir := lab.RequireModuleBins(t, "agentd", "ztunnel", "meshlab")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	const pods = 40
	r, err := Measure(ctx, Options{BinDir: dir, Pods: pods, Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	WriteTable(&out, r)
	t.Log("\n" + out.String())
	if r.Enroll <= 0 || r.Restart <= 0 || r.Setup <= 0 {
		t.Errorf("times %v, %v, %v: want all measured", r.Setup, r.Enroll, r.Restart)
	}
	if grew := r.ZAfter.FDs - r.ZBefore.FDs; grew < pods*(r.PerPod-2) || grew > pods*r.PerPod+16 {
		t.Errorf("ztunnel's fds grew by %d for %d pods of up to %d sockets each", grew, pods, r.PerPod)
	}
	if r.FDBudget <= 0 {
		t.Errorf("fd budget %d, want ztunnel's", r.FDBudget)
	}

	start := time.Now()
	_, err = Measure(ctx, Options{BinDir: dir, Pods: 1 << 20, Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Errorf("a million pods: %v, want refused for the fd budget", err)
	}
	t.Logf("refused in %v", time.Since(start))
}
