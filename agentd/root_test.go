package agentd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"

	"github.com/cilium/ebpf"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/bpf"
)

// realEnv is a throwaway cgroup and pin dir for the real datapath.
type realEnv struct {
	cgroup, pinDir string
}

func newRealEnv(t *testing.T) realEnv {
	t.Helper()
	requireRoot(t, "loads eBPF programs and attaches them to a cgroup")
	root, err := loader.FindCgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	id := "amtest-agentd-" + hex.EncodeToString(b)
	e := realEnv{cgroup: filepath.Join(root, id), pinDir: filepath.Join(loader.BPFFSPath, id)}
	if err := os.Mkdir(e.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := loader.Cleanup(e.pinDir, nil); err != nil {
			t.Error(err)
		}
		if err := os.Remove(e.cgroup); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	return e
}

// startAgentd runs the agentd command line until the returned stop.
func startAgentd(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	logs := &testutil.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, logs) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agentd: %v", err)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("agentd log:\n%s", logs)
		}
	})
	return stop
}

// enrolledInKernel reports whether cookie is in the pinned enrolled_netns
// map and has a pinned sk_lookup link.
func enrolledInKernel(t *testing.T, pinDir string, cookie uint64) bool {
	t.Helper()
	inMap, hasLink := kernelState(t, pinDir, cookie)
	if inMap != hasLink {
		t.Fatalf("netns %d: in map %v but sk_lookup link pinned %v", cookie, inMap, hasLink)
	}
	return inMap
}

// kernelState is whether netns cookie is in the enrolled map and whether
// its sk_lookup link is pinned: the two agree except while agentd is
// enrolling or unenrolling it.
func kernelState(t *testing.T, pinDir string, cookie uint64) (inMap, hasLink bool) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(bpf.MapPin(pinDir, bpf.MapEnrolledNetns), nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, false // agentd has not loaded the datapath yet
	}
	if err != nil {
		t.Fatalf("open pinned map: %v", err)
	}
	defer m.Close()
	var v uint8
	inMap = m.Lookup(cookie, &v) == nil
	_, err = os.Stat(bpf.LinkPin(pinDir, bpf.SkLookupLinkName(cookie)))
	return inMap, err == nil
}

// waitKernel waits until netns cookie's map entry and link agree on want
// (in between, while agentd works on it, they may not).
func waitKernel(t *testing.T, pinDir string, cookie uint64, want bool) {
	t.Helper()
	var inMap, hasLink bool
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if inMap, hasLink = kernelState(t, pinDir, cookie); inMap == want && hasLink == want {
			return
		}
	}
	t.Fatalf("netns %d enrolled in the kernel: want %v, have map entry %v, sk_lookup link pinned %v", cookie, want, inMap, hasLink)
}

// TestAgentdRealDatapath runs the whole agent on the real eBPF datapath:
// enroll, hand-off with the real fd, unenroll, a restart that keeps
// capture, and cleanup.
func TestAgentdRealDatapath(t *testing.T) {
	env := newRealEnv(t)
	a, b := newNetns(t), newNetns(t)
	dir := t.TempDir()
	cfg, sock := filepath.Join(dir, "mesh.json"), filepath.Join(dir, "agentd.sock")
	save(t, cfg, config(workload("a", a, true), workload("b", b, true)))
	args := []string{"run", "--node", node, "--config", cfg, "--pin-dir", env.pinDir, "--cgroup", env.cgroup,
		"--socket", sock, "--log-format", "text", "--log-level", "debug"}
	stop := startAgentd(t, args...)
	waitForFile(t, sock)
	ev := &eventLog{}
	log, _ := newLog(t)
	stopZ := startZtunnel(t, sock, ev, log)
	waitEvents(t, ev, fmt.Sprintf("zt add a %d", a.cookie), fmt.Sprintf("zt add b %d", b.cookie))
	waitKernel(t, env.pinDir, a.cookie, true)
	waitKernel(t, env.pinDir, b.cookie, true)

	save(t, cfg, config(workload("b", b, true)))
	waitEvents(t, ev, "zt del a")
	waitKernel(t, env.pinDir, a.cookie, false)

	// Restart agentd (and ztunnel's connection): b stays captured all along.
	stop()
	stopZ()
	if !enrolledInKernel(t, env.pinDir, b.cookie) {
		t.Fatal("stopping agentd unenrolled b")
	}
	ev.take()
	startAgentd(t, args...)
	waitForFile(t, sock)
	startZtunnel(t, sock, ev, log)
	// Exactly this: no empty snapshot first, which would drop b in ztunnel.
	ev.waitFor(t, fmt.Sprintf("zt add b %d", b.cookie), "zt snapshot b")
	if !enrolledInKernel(t, env.pinDir, b.cookie) {
		t.Fatal("b lost capture across the restart")
	}
}

func TestAgentdCleanupRemovesPins(t *testing.T) {
	env := newRealEnv(t)
	a := newNetns(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.json")
	save(t, cfg, config(workload("a", a, true)))
	stop := startAgentd(t, "--node", node, "--config", cfg, "--pin-dir", env.pinDir, "--cgroup", env.cgroup,
		"--socket", filepath.Join(dir, "s.sock"))
	waitKernel(t, env.pinDir, a.cookie, true)
	stop()
	if err := Run(context.Background(), []string{"cleanup", "--pin-dir", env.pinDir}, &testutil.LogBuffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(env.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin dir still there after cleanup: %v", err)
	}
}

// waitEvents waits until every one of want has been logged (others may be
// interleaved, as ztunnel may connect before or after the first sync).
func waitEvents(t *testing.T, ev *eventLog, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = ev.get()
		if !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(got, w) }) {
			return
		}
	}
	t.Fatalf("events %q lack some of %q", strings.Join(got, "|"), want)
}
