package ztunnel

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

func TestPendingPodSetUpWhenConfigCatchesUp(t *testing.T) {
	e := newEnv(t)
	e.node.SetConfig(testConfig(false))
	e.handOver("uid-a", "client", e.a, ipA, ip6A)
	e.handOver("uid-b", "server", e.b, ipB, ip6B)
	// The snapshot is taken, and its acknowledgement says a pod is not
	// set up (agentd then hands no current ztunnel's pods to this one).
	if err := e.node.SnapshotDone([]string{"uid-a", "uid-b"}); err == nil || !strings.Contains(err.Error(), "agents/server (pending)") {
		t.Fatalf("SnapshotDone = %v, want an error naming B pending", err)
	}
	if st, _ := e.pod("uid-b").getState(); st != statePending {
		t.Fatalf("B state %s, want pending", st)
	}
	if err := e.node.Ready(); err == nil || !strings.Contains(err.Error(), "agents/server (pending)") {
		t.Fatalf("Ready() = %v, want B pending", err)
	}
	if got := testutil.ToFloat64(e.node.gauges.pods.WithLabelValues(statePending)); got != 1 {
		t.Errorf("pods{state=pending} = %v", got)
	}
	wantA := []string{"198.18.1.1:15006", "198.18.1.1:15008", "[fd00:18::1]:15006", "[fd00:18::1]:15008"}
	if got := e.lst.keys(); !slices.Equal(got, wantA) {
		t.Errorf("SOCKHASH keys %v, want only A's %v", got, wantA)
	}

	e.node.SetConfig(testConfig(true))
	deadline := time.Now().Add(5 * time.Second)
	for e.node.Ready() != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.node.Ready(); err != nil {
		t.Fatalf("not ready after config caught up: %v", err)
	}
	if got := len(e.lst.keys()); got != 8 {
		t.Errorf("%d SOCKHASH keys, want 8 (2 pods x 2 ips x 2 ports)", got)
	}
	e.orig.set(appB)
	if got, err := roundTrip(dialIn(t, e.a, "127.0.0.1:15001"), "late"); got != "echo:late" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
}

func TestRemovePodClosesEverything(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(appB)
	// A live connection through B: the app waits for our half-close.
	live := dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("pending"))
	waitFor(t, "conn active in B", func() bool { return e.pod("uid-b") != nil && e.pod("uid-b").active.Load() > 0 })
	pb := e.pod("uid-b")

	if err := e.node.RemovePod("uid-b"); err != nil {
		t.Fatal(err)
	}
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Errorf("live conn after RemovePod: read err %v, want closed", err)
	}
	for _, k := range e.lst.keys() {
		if strings.Contains(k, "198.18.1.2") || strings.Contains(k, "fd00:18::2") {
			t.Errorf("SOCKHASH still has %s", k)
		}
	}
	if pb.active.Load() != 0 {
		t.Errorf("%d conns still active in removed pod", pb.active.Load())
	}
	for _, c := range e.certs.Snapshot() {
		if c.ID == idServer {
			t.Errorf("certificate of %s kept after its last pod left", idServer)
		}
	}
	err := netns.Do(int(e.b.Fd()), func() error {
		c, err := net.DialTimeout("tcp", "198.18.1.2:15008", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("B:15008 still accepts after RemovePod")
	}
	// A's identity and listeners are untouched.
	if err := e.node.Ready(); err != nil {
		t.Errorf("ready after removing B: %v", err)
	}
}

func TestSnapshotDropsStalePods(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	if err := e.node.SnapshotDone([]string{"uid-a"}); err != nil {
		t.Fatal(err)
	}
	if e.pod("uid-b") != nil {
		t.Error("B survived a snapshot without it")
	}
	// Re-sending A (same netns) keeps its listeners.
	before := e.pod("uid-a")
	e.handOver("uid-a", "client", e.a, ipA, ip6A)
	if e.pod("uid-a") != before {
		t.Error("re-sent add of a ready pod replaced it")
	}
}

func TestAdminAndReadiness(t *testing.T) {
	e := newEnv(t)
	ready := httptest.NewServer(e.node.ReadyHandler())
	defer ready.Close()
	admin := httptest.NewServer(e.node.AdminHandler())
	defer admin.Close()
	if code := get(t, ready.URL+"/healthz/ready", nil); code != http.StatusServiceUnavailable {
		t.Errorf("ready before snapshot: %d, want 503", code)
	}
	e.handOverAB()
	if code := get(t, ready.URL+"/healthz/ready", nil); code != http.StatusOK {
		t.Errorf("ready after snapshot: %d, want 200", code)
	}
	var pods []PodStatus
	get(t, admin.URL+"/pods", &pods)
	if len(pods) != 2 || pods[0].Name != "client" || pods[0].State != stateReady || len(pods[0].Listeners) != 1 || len(pods[0].Listeners[0].Registered) != 4 {
		t.Errorf("/pods = %+v", pods)
	}
	var certs []map[string]any
	get(t, admin.URL+"/certs", &certs)
	if len(certs) != 2 {
		t.Errorf("/certs has %d entries, want 2", len(certs))
	}
	var cfg map[string]any
	get(t, admin.URL+"/config", &cfg)
	if cfg["trustDomain"] != td {
		t.Errorf("/config = %v", cfg)
	}
	if code := get(t, admin.URL+"/healthz", nil); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
}

func TestShutdownStopsEverything(t *testing.T) {
	e := newEnv(t)
	base := runtime.NumGoroutine()
	e.handOverAB()
	e.orig.set(appB)
	live := dialIn(t, e.a, "127.0.0.1:15001")
	live.Write([]byte("x"))
	waitFor(t, "conn active", func() bool { return e.pod("uid-a").active.Load() > 0 })
	e.stop()
	e.stop = func() {}
	if err := e.node.Ready(); err == nil {
		t.Error("ready after shutdown")
	}
	if keys := e.lst.keys(); len(keys) != 0 {
		t.Errorf("SOCKHASH entries left after shutdown: %v", keys)
	}
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Read(make([]byte, 8)); err == nil || isTimeout(err) {
		t.Errorf("live conn after shutdown: %v, want closed", err)
	}
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base+2 })
	if err := e.node.AddPod(handoff.Pod{UID: "late"}, nil); err == nil {
		t.Error("AddPod after shutdown succeeded")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func get(t *testing.T, url string, into any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("decode %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// TestRemovePodClosesPooledHBONEConns: an HBONE connection dialed inside
// A's netns stays pooled after its stream ends; removing A must close it
// at once, not after the idle timeout, so it does not pin A's netns.
func TestRemovePodClosesPooledHBONEConns(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(appB)
	c := dialIn(t, e.a, "127.0.0.1:15001")
	if got, err := roundTrip(c, "pooled"); err != nil || got != "echo:pooled" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	c.Close()
	waitFor(t, "stream released", func() bool { return e.node.transport.Stats() == hbone.PoolStats{Conns: 1} })
	if err := e.node.RemovePod("uid-a"); err != nil {
		t.Fatal(err)
	}
	if s := e.node.transport.Stats(); s.Conns != 0 {
		t.Errorf("pool after removing the source pod: %+v, want no conns", s)
	}
	waitFor(t, "B's ztunnel sees the conn closed", func() bool { return e.node.server.Conns() == 0 })
}
