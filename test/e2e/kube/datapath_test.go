package kube

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestMeshPods: pods created through the API in an enabled namespace talk
// over mTLS with their ServiceAccounts' SPIFFE ids; a pod labelled
// disabled and a pod in an unlabelled namespace are not captured.
func TestMeshPods(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo")
	namespace(ctx, t, l, "plain", false)
	srv := startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	off := startPod(ctx, t, l, echoPod("shop", "off", "client", "n1", map[string]string{dataplaneLabel: "disabled"}), false)
	plain := startPod(ctx, t, l, echoPod("plain", "plain", "", "n1", nil), false)

	pairs := [][2]netip.Addr{{cli.IPv4(), srv.IPv4()}, {cli.IPv6(), srv.IPv6()}}
	for _, pr := range pairs {
		mustSend(ctx, t, l, cli, pr[1], "hello-"+pr[1].String())
		meshLog(ctx, t, l, 1, "outbound", pr[0], pr[1], spiffeID("shop", "client"), spiffeID("shop", "echo"))
		meshLog(ctx, t, l, 2, "inbound", pr[0], pr[1], spiffeID("shop", "client"), spiffeID("shop", "echo"))
	}
	for _, p := range []*lab.Pod{off, plain} {
		since, before := time.Now(), countOutbound(t, l, 1, srv.IPv4())
		mustSend(ctx, t, l, p, srv.IPv4(), "direct-"+p.Name)
		plainInbound(ctx, t, l, 2, since, p.IPv4(), srv.IPv4())
		if n := countOutbound(t, l, 1, srv.IPv4()); n != before {
			t.Errorf("pod %s/%s (not enrolled) was captured on n1: %d outbound logs to %s, want %d", p.Namespace, p.Name, n, srv.IPv4(), before)
		}
	}
}
