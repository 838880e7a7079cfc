package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestPodLifecycle: a deleted pod leaves its node's config and its
// certificate goes; a new pod is enrolled and reachable through the mesh.
// It logs how long both take.
func TestPodLifecycle(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo", "fresh")
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)

	created := time.Now()
	if _, err := l.CreatePod(ctx, echoPod("shop", "fresh", "fresh", "n2", nil)); err != nil {
		t.Fatal(err)
	}
	ip := podIPv4(ctx, t, l, "shop", "fresh")
	reachable := waitMeshReachable(ctx, t, l, cli, ip)
	t.Logf("TIMING create -> reachable through the mesh: %s", reachable.Sub(created).Round(time.Millisecond))
	mustSend(ctx, t, l, cli, ip, "fresh-again")
	// The probes sent before n1 knew the new pod went as plaintext (an
	// address it did not know yet; n2 is permissive), so n2's first line
	// may be one of those: the mesh's is an mTLS line with both
	// identities.
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	srcID, dstID := spiffeID("shop", "client"), spiffeID("shop", "fresh")
	if _, err := l.WaitAccessLog(wctx, 2, func(a lab.AccessLog) bool {
		return a.Direction == "inbound" && a.Src().Addr() == cli.IPv4() && a.Dst().Addr() == ip &&
			a.MTLS && a.SrcIdentity == srcID && a.DstIdentity == dstID
	}); err != nil {
		dumpLog(t, l.DaemonLog(2, "ztunnel"))
		t.Fatalf("n2: no inbound mTLS line %s -> %s with %s -> %s: %v", cli.IPv4(), ip, srcID, dstID, err)
	}
	fresh := l.KubePod("shop", "fresh")
	if fresh == nil {
		t.Fatal("no sandbox for shop/fresh")
	}
	id := "shop/fresh"
	if certs, err := certIDs(ctx, l, 2); err != nil || !certs[id] {
		t.Fatalf("n2 /certs before delete: no certificate for %s (%v): %v", id, err, certs)
	}

	deleted := time.Now()
	if err := l.Client().CoreV1().Pods("shop").Delete(ctx, "fresh", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitWorkload(ctx, fresh.UID, func(w *meshconfig.Workload) bool { return w == nil }); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING delete -> gone from every node's config: %s", time.Since(deleted).Round(time.Millisecond))
	waitCertGone(ctx, t, l, 2, id)
	t.Logf("TIMING delete -> certificate gone from n2: %s", time.Since(deleted).Round(time.Millisecond))
	if c, err := l.ZtunnelConfig(ctx, 1); err != nil || hasUID(c, fresh.UID) {
		t.Errorf("n1 config still has deleted pod %s (%v)", fresh.UID, err)
	}
}

// podIPv4 waits for the pod's IPv4 address in its status.
func podIPv4(ctx context.Context, t *testing.T, l *lab.Lab, ns, name string) netip.Addr {
	t.Helper()
	var ip netip.Addr
	err := l.WaitPod(ctx, ns, name, "has an ip", func(p *corev1.Pod) bool {
		if p == nil {
			return false
		}
		a, err := netip.ParseAddr(p.Status.PodIP)
		ip = a
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// waitMeshReachable sends from cli to dst until the echo comes back
// through the mesh (an outbound mTLS log on cli's node) and returns when.
func waitMeshReachable(ctx context.Context, t *testing.T, l *lab.Lab, cli *lab.Pod, dst netip.Addr) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := send(ctx, l, cli, dst, "probe")
		if err == nil && countMTLSOutbound(t, l, cli.Node, dst) > 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reachable through the mesh from %s in 30s (last: %v)", dst, cli.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countMTLSOutbound counts node's outbound mTLS access logs to dst.
func countMTLSOutbound(t *testing.T, l *lab.Lab, node int, dst netip.Addr) int {
	t.Helper()
	logs, err := l.AccessLogs(node)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range logs {
		if a.Direction == "outbound" && a.MTLS && a.Dst().Addr() == dst {
			n++
		}
	}
	return n
}

// certIDs are the identities ("ns/sa") node's ztunnel holds
// certificates for (admin /certs).
func certIDs(ctx context.Context, l *lab.Lab, node int) (map[string]bool, error) {
	body, err := l.ZtunnelAdmin(ctx, node, "/certs")
	if err != nil {
		return nil, err
	}
	var certs []struct {
		ID struct{ Namespace, ServiceAccount string } `json:"id"`
	}
	if err := json.Unmarshal(body, &certs); err != nil {
		return nil, fmt.Errorf("decode /certs: %w", err)
	}
	out := map[string]bool{}
	for _, c := range certs {
		out[c.ID.Namespace+"/"+c.ID.ServiceAccount] = true
	}
	return out, nil
}

// waitCertGone waits until node's ztunnel holds no certificate for id.
func waitCertGone(ctx context.Context, t *testing.T, l *lab.Lab, node int, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		certs, err := certIDs(ctx, l, node)
		if err == nil && !certs[id] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("n%d /certs still has %s after 30s (%v): %v", node, id, err, certs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasUID reports whether c has workload uid.
func hasUID(c *meshconfig.Config, uid string) bool {
	for _, w := range c.Workloads {
		if w.UID == uid {
			return true
		}
	}
	return false
}
