package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestRestarts: restarting agentd keeps established connections and the
// capture of new ones; while ztunnel is down the pod's connections fail
// closed, and once it is back new connections work again.
func TestRestarts(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	ctx := context.Background()
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)

	t.Run("agentd", func(t *testing.T) {
		wait4 := startStream(t, l, a, addr(b.IPv4(), echoPort), 6*time.Second)
		wait6 := startStream(t, l, a, addr(b.IPv6(), echoPort), 6*time.Second)
		time.Sleep(time.Second)
		if err := l.RestartAgentd(ctx, 1); err != nil {
			t.Fatalf("restart agentd: %v", err)
		}
		send(t, l, a, addr(b.IPv4(), echoPort), "after-agentd-restart")
		since := time.Now()
		send(t, l, a, addr(b.IPv6(), echoPort), "after-agentd-restart-v6")
		x := waitAccess(t, l, 1, "outbound after the agentd restart", func(x lab.AccessLog) bool {
			return x.Direction == "outbound" && x.Dst().Addr() == b.IPv6() && x.Time.After(since.Add(-time.Second)) && x.MTLS
		})
		t.Logf("captured after restart: %+v", x)
		wait4()
		wait6()
	})
	t.Run("ztunnel", func(t *testing.T) {
		if err := l.StopZtunnel(ctx, 1); err != nil {
			t.Fatalf("stop ztunnel: %v", err)
		}
		if err := trySend(l, a, addr(b.IPv4(), echoPort), "while-ztunnel-down"); err == nil {
			t.Errorf("a reached b while node 1's ztunnel was down: the mesh must fail closed")
		}
		if err := l.StartZtunnel(ctx, 1); err != nil {
			t.Fatalf("start ztunnel: %v", err)
		}
		send(t, l, a, addr(b.IPv4(), echoPort), "after-ztunnel-restart")
		send(t, l, a, addr(b.IPv6(), echoPort), "after-ztunnel-restart-v6")
	})
}

// TestCertificateRenewal: with a 4s certificate lifetime, certificates are
// renewed at half life several times while long-lived connections stream,
// and they are never interrupted.
func TestCertificateRenewal(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2, CertLifetime: 4 * time.Second})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	before := serials(t, l, 1)
	wait4 := startStream(t, l, a, addr(b.IPv4(), echoPort), 9*time.Second)
	wait6 := startStream(t, l, a, addr(b.IPv6(), echoPort), 9*time.Second)
	wait4()
	wait6()
	after := serials(t, l, 1)
	if len(after) == 0 {
		t.Fatal("node 1's ztunnel reports no certificates")
	}
	for s := range after {
		if before[s] {
			t.Errorf("certificate %s was not renewed in 9s with a 4s lifetime", s)
		}
	}
	// New connections use the renewed certificates.
	send(t, l, a, addr(b.IPv4(), echoPort), "after-renewal")
}

// serials returns the serials of node's workload certificates.
func serials(t *testing.T, l *lab.Lab, node int) map[string]bool {
	t.Helper()
	st, body, err := l.NodeHTTPGet(context.Background(), node, "http://127.0.0.1:15000/certs")
	if err != nil || st != 200 {
		t.Fatalf("GET /certs: %d %v", st, err)
	}
	var certs []struct{ Serial string }
	if err := json.Unmarshal(body, &certs); err != nil {
		t.Fatalf("decode /certs: %v: %s", err, body)
	}
	out := map[string]bool{}
	for _, c := range certs {
		if c.Serial != "" {
			out[c.Serial] = true
		}
	}
	return out
}
