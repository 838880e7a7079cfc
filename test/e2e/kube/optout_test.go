package kube

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestOptOut: labelling a running pod disabled, then removing the
// namespace's label, unenrolls pods without breaking them: a connection
// open across the change keeps working and new connections go direct.
func TestOptOut(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo")
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	srv := startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)
	mustSend(ctx, t, l, cli, srv.IPv4(), "enrolled")
	meshLog(ctx, t, l, 2, "inbound", cli.IPv4(), srv.IPv4(), spiffeID("shop", "client"), spiffeID("shop", "echo"))
	live := streamAsync(ctx, l, cli, srv.IPv4(), 4*time.Second)
	time.Sleep(500 * time.Millisecond)

	patch := []byte(`{"metadata":{"labels":{"` + dataplaneLabel + `":"disabled"}}}`)
	if _, err := l.Client().CoreV1().Pods("shop").Patch(ctx, "client", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEnrolled(ctx, t, l, cli, false)
	if err := <-live; err != nil {
		t.Errorf("connection open across the opt-out: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // the stream's access logs are written
	since := time.Now()
	before := countOutbound(t, l, 1, srv.IPv4())
	mustSend(ctx, t, l, cli, srv.IPv4(), "pod-disabled")
	plainInbound(ctx, t, l, 2, since, cli.IPv4(), srv.IPv4())
	if n := countOutbound(t, l, 1, srv.IPv4()); n != before {
		t.Errorf("disabled pod still captured: %d outbound logs, want %d", n, before)
	}

	patch = []byte(`{"metadata":{"labels":{"` + dataplaneLabel + `":null}}}`)
	if _, err := l.Client().CoreV1().Namespaces().Patch(ctx, "shop", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEnrolled(ctx, t, l, srv, false)
	inbound := countInbound(t, l, 2, srv.IPv4())
	mustSend(ctx, t, l, cli, srv.IPv4(), "namespace-disabled")
	time.Sleep(200 * time.Millisecond)
	if n := countInbound(t, l, 2, srv.IPv4()); n != inbound {
		t.Errorf("pod of an unlabelled namespace still captured: %d inbound logs, want %d", n, inbound)
	}
}

// waitEnrolled waits until p's node sets it up (or releases it) and every
// node's config says so.
func waitEnrolled(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, enrolled bool) {
	t.Helper()
	if _, err := l.WaitMeshPod(ctx, p.Namespace, p.Name, enrolled); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitWorkload(ctx, p.UID, func(w *meshconfig.Workload) bool { return w != nil && w.Enrolled == enrolled }); err != nil {
		t.Fatal(err)
	}
}

// countInbound counts node's inbound access logs to dst.
func countInbound(t *testing.T, l *lab.Lab, node int, dst interface{ String() string }) int {
	t.Helper()
	logs, err := l.AccessLogs(node)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range logs {
		if a.Direction == "inbound" && a.Dst().Addr().String() == dst.String() {
			n++
		}
	}
	return n
}
