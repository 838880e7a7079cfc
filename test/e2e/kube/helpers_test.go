package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
)

// Labels of the mesh's enrollment (docs/controlplane.md).
const (
	dataplaneLabel = "agentmesh.io/dataplane"
	echoPort       = 8080
)

// testLogger sends the lab's progress to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return testutil.TLogger(t, slog.LevelInfo)
}

// namespace creates ns (enabled: labelled for the mesh) with service
// accounts sas.
func namespace(ctx context.Context, t *testing.T, l *lab.Lab, ns string, enabled bool, sas ...string) {
	t.Helper()
	labels := map[string]string{}
	if enabled {
		labels[dataplaneLabel] = "enabled"
	}
	if _, err := l.CreateNamespace(ctx, ns, labels); err != nil {
		t.Fatal(err)
	}
	for _, sa := range sas {
		_, err := l.Client().CoreV1().ServiceAccounts(ns).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create service account %s/%s: %v", ns, sa, err)
		}
	}
}

// echoPod is pod ns/name on node running `meshlab app echo` on :8080 as
// service account sa, with a readiness probe.
func echoPod(ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	c := corev1.Container{Name: "echo", Image: "meshlab",
		Command: []string{"meshlab", "app", "echo", "--listen", fmt.Sprintf(":%d", echoPort)},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(echoPort)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{c}}}
}

// startPod creates an echo pod and waits until the mesh knows it
// (enrolled or not).
func startPod(ctx context.Context, t *testing.T, l *lab.Lab, pod *corev1.Pod, enrolled bool) *lab.Pod {
	t.Helper()
	if _, err := l.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	p, err := l.WaitMeshPod(ctx, pod.Namespace, pod.Name, enrolled)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// send runs `meshlab app send` in p to dst:8080 and reports whether the
// echo came back.
func send(ctx context.Context, l *lab.Lab, p *lab.Pod, dst netip.Addr, payload string) error {
	to := netip.AddrPortFrom(dst, echoPort).String()
	out, err := p.Run(ctx, l.Bin("meshlab"), "app", "send", "--to", to, "--payload", payload)
	if err != nil {
		return fmt.Errorf("%s -> %s: %w (%s)", p.Name, to, err, out)
	}
	var res struct {
		EchoOK bool `json:"echo_ok"`
	}
	if err := json.Unmarshal(out, &res); err != nil || !res.EchoOK {
		return fmt.Errorf("%s -> %s: no echo: %s (%v)", p.Name, to, out, err)
	}
	return nil
}

// mustSend fails the test unless send works.
func mustSend(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, dst netip.Addr, payload string) {
	t.Helper()
	if err := send(ctx, l, p, dst, payload); err != nil {
		t.Fatal(err)
	}
}

// spiffeID is the identity of service account ns/sa.
func spiffeID(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// meshLog waits for node's access log of a connection from src to dst
// (direction "outbound" or "inbound") and checks mTLS and identities.
func meshLog(ctx context.Context, t *testing.T, l *lab.Lab, node int, dir string, src, dst netip.Addr, srcID, dstID string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	a, err := l.WaitAccessLog(wctx, node, func(a lab.AccessLog) bool {
		// An outbound log's src_addr is ztunnel's side of the redirect.
		return a.Direction == dir && a.Dst().Addr() == dst && (dir == "outbound" || a.Src().Addr() == src)
	})
	if err != nil {
		dumpLog(t, l.DaemonLog(node, "ztunnel"))
		t.Fatalf("n%d %s access log %s -> %s: %v", node, dir, src, dst, err)
	}
	if !a.MTLS || a.SrcIdentity != srcID || a.DstIdentity != dstID {
		t.Errorf("n%d %s %s -> %s: mtls=%v src_identity=%q dst_identity=%q, want mtls with %q -> %q",
			node, dir, src, dst, a.MTLS, a.SrcIdentity, a.DstIdentity, srcID, dstID)
	}
}

// countOutbound counts node's outbound access logs to dst.
func countOutbound(t *testing.T, l *lab.Lab, node int, dst netip.Addr) int {
	t.Helper()
	logs, err := l.AccessLogs(node)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range logs {
		if a.Direction == "outbound" && a.Dst().Addr() == dst {
			n++
		}
	}
	return n
}

// plainInbound waits for node's inbound access log from src to dst (at
// or after since) and
// checks that it came without mTLS (the source is not in the mesh).
func plainInbound(ctx context.Context, t *testing.T, l *lab.Lab, node int, since time.Time, src, dst netip.Addr) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	a, err := l.WaitAccessLog(wctx, node, func(a lab.AccessLog) bool {
		return a.Direction == "inbound" && a.Src().Addr() == src && a.Dst().Addr() == dst && !a.Time.Before(since)
	})
	if err != nil {
		t.Fatalf("n%d inbound access log %s -> %s: %v", node, src, dst, err)
	}
	if a.MTLS || a.SrcIdentity != "" {
		t.Errorf("n%d inbound %s -> %s: mtls=%v src_identity=%q, want plaintext from outside the mesh", node, src, dst, a.MTLS, a.SrcIdentity)
	}
}

// dumpLog logs the last lines of a daemon log that are not debug.
func dumpLog(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Log(err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	t.Logf("--- last lines of %s ---\n%s", path, strings.Join(lines[max(0, len(lines)-40):], "\n"))
}
