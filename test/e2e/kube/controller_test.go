package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestControllerRestart: with the controller killed, existing and new
// connections between known pods keep working; restarted, it gets every
// node component back without restarting them, and changes flow again.
func TestControllerRestart(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo")
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	srv := startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)
	pids := daemonPIDs(l)
	live := streamAsync(ctx, l, cli, srv.IPv4(), 6*time.Second)

	time.Sleep(time.Second)
	if err := l.KillController(0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, dst := range []netip.Addr{srv.IPv4(), srv.IPv6()} {
		before := countMTLSOutbound(t, l, 1, dst)
		mustSend(ctx, t, l, cli, dst, "controller-down")
		waitCount(t, func() int { return countMTLSOutbound(t, l, 1, dst) }, before+1, "new mTLS connection to "+dst.String()+" while the controller is down")
	}

	restarted := time.Now()
	if err := l.StartController(ctx, 0); err != nil {
		t.Fatal(err)
	}
	st := waitResync(ctx, t, l, restarted)
	t.Logf("TIMING controller restart -> all node components acked: %s", time.Since(restarted).Round(time.Millisecond))
	if got := daemonPIDs(l); got != pids {
		t.Errorf("node components restarted: pids %v, then %v", pids, got)
	}
	if j, _ := json.Marshal(st.Nodes); len(st.Nodes) != 2 {
		t.Errorf("status after restart: %s", j)
	}
	fresh := startPod(ctx, t, l, echoPod("shop", "fresh", "echo", "n2", nil), true)
	waitMeshReachable(ctx, t, l, cli, fresh.IPv4())
	if err := <-live; err != nil {
		t.Errorf("connection opened before the controller died: %v", err)
	}
}

// TestLeaderElection: of two replicas one holds the Lease; killed, the
// other takes it and serves streams and signing.
func TestLeaderElection(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client")
	startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	if err := l.StartController(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitHolder(ctx, t, l, lab.ControllerID(0))
	if st, err := l.ControllerStatusOf(ctx, 1); err != nil || st.Leader {
		t.Fatalf("replica 1 status: %+v %v, want a follower", st, err)
	}

	killed := time.Now()
	if err := l.KillController(0); err != nil {
		t.Fatal(err)
	}
	waitHolder(ctx, t, l, lab.ControllerID(1))
	t.Logf("TIMING leader killed -> lease taken by the other replica: %s", time.Since(killed).Round(time.Millisecond))
	if st, err := l.ControllerStatusOf(ctx, 1); err != nil || !st.Leader {
		t.Errorf("replica 1 status after takeover: %+v %v, want the leader", st, err)
	}
	fwd, err := l.ForwardFromNode(1, lab.ControllerAddr(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	if err := streamAs(ctx, t, l, 1, fwd.Addr(), l.NodeTokenFile(1), "n1"); err != nil {
		t.Errorf("stream from the new leader: %v", err)
	}
	if _, err := sign(ctx, t, l, fwd.Addr(), l.NodeTokenFile(1), "shop", "client"); err != nil {
		t.Errorf("sign by the new leader: %v", err)
	}
}

// daemonPIDs are the pids of every node's agentd and ztunnel.
func daemonPIDs(l *lab.Lab) string {
	s := ""
	for i := 1; i <= l.Nodes(); i++ {
		for _, k := range []string{"agentd", "ztunnel"} {
			if p := l.Daemon(i, k); p != nil {
				s += fmt.Sprintf("n%d/%s=%d ", i, k, p.PID)
			}
		}
	}
	return s
}

// streamAsync runs `meshlab app stream` from p to dst:8080 for d; the
// channel gets its error.
func streamAsync(ctx context.Context, l *lab.Lab, p *lab.Pod, dst netip.Addr, d time.Duration) <-chan error {
	ch := make(chan error, 1)
	go func() {
		to := netip.AddrPortFrom(dst, echoPort).String()
		out, err := p.Run(ctx, l.Bin("meshlab"), "app", "stream", "--to", to, "--duration", d.String(), "--interval", "50ms")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		ch <- err
	}()
	return ch
}

// waitCount waits up to 10s for count() >= want.
func waitCount(t *testing.T, count func() int, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, count(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitResync waits until replica 0 reports both components of every node
// connected after since and acked.
func waitResync(ctx context.Context, t *testing.T, l *lab.Lab, since time.Time) *lab.ControllerStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := l.ControllerStatusOf(ctx, 0)
		if err == nil && st.AllAcked(l.Nodes()) && connectedAfter(st, since) {
			return st
		}
		if time.Now().After(deadline) {
			j, _ := json.Marshal(st)
			t.Fatalf("nodes did not resync with the restarted controller in 60s: %s (%v)", j, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connectedAfter reports whether every stream in st started after since.
func connectedAfter(st *lab.ControllerStatus, since time.Time) bool {
	for _, comps := range st.Nodes {
		for _, s := range comps {
			if s.ConnectedSince.Before(since) {
				return false
			}
		}
	}
	return true
}

// waitHolder waits up to 30s until the controllers' Lease names holder.
func waitHolder(ctx context.Context, t *testing.T, l *lab.Lab, holder string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	for {
		lease, err := l.Client().CoordinationV1().Leases(lab.MeshNamespace).Get(ctx, lab.LeaseName, metav1.GetOptions{})
		if err == nil && lease.Spec.HolderIdentity != nil {
			got = *lease.Spec.HolderIdentity
			if got == holder {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %s holder %q, want %q (%v)", lab.LeaseName, got, holder, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
