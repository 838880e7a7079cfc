package kube

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// TestSSEThroughMeshLab: a server-sent event stream of two minutes, an
// event every 5 s, from an agent on the other node, by Service name,
// proxied per request (--http-per-request) over HBONE: every event
// arrives, each within a second of when the server sent it (nothing
// holds a chunk back), and the stream is not cut by any timeout.
// SSE_DURATION shortens it for a quick local run.
func TestSSEThroughMeshLab(t *testing.T) {
	total := 2 * time.Minute
	if v := os.Getenv("SSE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SSE_DURATION %q: %v", v, err)
		}
		total = d
	}
	const every = 5 * time.Second
	n := int(total/every) + 1
	l := newLab(t, 2, func(o *lab.Options) { o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request") })
	ctx, cancel := context.WithTimeout(context.Background(), total+3*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "writer")
	caller := startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	p := agentPod(svcNS, "writer-0", "writer", "n2")
	p.Labels = map[string]string{"app": "writer"}
	startPod(ctx, t, l, p, true)
	createService(ctx, t, l, "writer", map[string]string{"app": "writer"}, intstr.FromInt32(echoPort))
	waitEndpoints(ctx, t, l, 1, svcNS+"/writer", 1)

	start := time.Now()
	evs := runLines[meshlab.SSEEvent](ctx, t, caller, l.Bin("meshlab"), "app", "sse-get",
		"--url", fmt.Sprintf("http://writer:%d/sse?n=%d&every=%s", echoPort, n, every))
	took := time.Since(start)
	var worst time.Duration
	for i, ev := range evs {
		if ev.Error != "" {
			t.Fatalf("event stream broke after %d events (%s): %s", i, took.Round(time.Second), ev.Error)
		}
		if ev.ID != strconv.Itoa(i) {
			t.Fatalf("event %d has id %q", i, ev.ID)
		}
		lag := time.Duration(ev.Received - ev.Sent)
		worst = max(worst, lag)
		if lag > time.Second || lag < -time.Second {
			t.Errorf("event %d arrived %s after it was sent, want within a second", i, lag)
		}
	}
	t.Logf("%d events over %s, worst lag %s", len(evs), took.Round(time.Millisecond), worst)
	if len(evs) != n {
		t.Errorf("%d events arrived, want %d", len(evs), n)
	}
	// Proxied per request: the source's request line says so.
	line, err := lab.WaitLogLine(ctx, l.DaemonLog(1, "ztunnel"), "request", func(m lab.LogLine) bool {
		return m.Str("path") == "/sse" && m.Str("dst_service") == svcNS+"/writer"
	})
	if err != nil {
		t.Fatalf("the stream's request line: %v", err)
	}
	if line["status"] != float64(200) || line.Str("result") != "ok" {
		t.Errorf("request line %v", line)
	}
}
