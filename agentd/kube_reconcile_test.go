package agentd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/handoff"
)

// fakeFinder answers Find from a table: a netns, or an error.
type fakeFinder struct {
	mu    sync.Mutex
	ns    map[string]*testNetns // guarded by mu
	err   map[string]error      // guarded by mu
	calls map[string]int        // guarded by mu
}

func newFakeFinder() *fakeFinder {
	return &fakeFinder{ns: map[string]*testNetns{}, err: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeFinder) Find(uid string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[uid]++
	if err := f.err[uid]; err != nil {
		return nil, err
	}
	if ns := f.ns[uid]; ns != nil {
		return os.Open(ns.path)
	}
	return nil, fmt.Errorf("%w: no pod%s", ErrNoPodCgroup, uid)
}

func (f *fakeFinder) set(uid string, ns *testNetns, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ns[uid], f.err[uid] = ns, err
}

func (f *fakeFinder) called(uid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[uid]
}

// recordingHandoff is a Handoff that records into the log.
type recordingHandoff struct{ ev *eventLog }

func (h recordingHandoff) Upsert(p handoff.Pod, _ *os.File) {
	h.ev.add("ho add %s %d", p.UID, p.NetnsCookie)
}
func (h recordingHandoff) Remove(uid string) { h.ev.add("ho del %s", uid) }

func (h recordingHandoff) UpsertGated(p handoff.Pod, _ *os.File) func(context.Context) error {
	h.ev.add("ho gated add %s %d", p.UID, p.NetnsCookie)
	return func(context.Context) error { return nil }
}

// kubeWorkload is a workload as the controller sends it: no Netns.
func kubeWorkload(uid string, enrolled bool) meshconfig.Workload {
	return workload(uid, nil, enrolled)
}

func newKubeReconciler(t *testing.T) (*reconciler, *fakeFinder, *fakeDatapath, *eventLog) {
	t.Helper()
	log, _ := newLog(t)
	ev := &eventLog{}
	dp := newFakeDatapath(ev)
	r, err := newReconciler(node, dp, recordingHandoff{ev}, log)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeFinder()
	r.finder = f
	return r, f, dp, ev
}

// TestKubeReconcileFindsNetns: in Kubernetes mode the enrolled pods of this
// node are enrolled in the netns the finder gives; a pod still starting is
// retried, a host-network pod is skipped for good.
func TestKubeReconcileFindsNetns(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	r, f, _, ev := newKubeReconciler(t)
	f.set("a", a, nil)
	f.set("b", nil, fmt.Errorf("%w: pod cgroup x", ErrNoProcess))
	f.set("h", nil, ErrHostNetwork)
	f.set("c", a, nil)
	f.set("d", b, nil)
	other := kubeWorkload("c", true)
	other.Node = "node-2"
	cfg := config(kubeWorkload("a", true), kubeWorkload("b", true), other, kubeWorkload("d", false), kubeWorkload("h", true))
	err := r.sync(cfg)
	if !errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), "team/agent-b") {
		t.Fatalf("sync = %v, want b's ErrNoProcess", err)
	}
	if got, want := ev.take(), []string{fmt.Sprintf("dp enroll %d", a.cookie), fmt.Sprintf("ho add a %d", a.cookie)}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events %q, want %q", got, want)
	}
	if f.called("c") != 0 || f.called("d") != 0 {
		t.Errorf("finder asked for another node's pod (%d) or an unenrolled one (%d)", f.called("c"), f.called("d"))
	}
	f.set("b", b, nil)
	if err := r.sync(cfg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got, want := ev.take(), []string{fmt.Sprintf("dp enroll %d", b.cookie), fmt.Sprintf("ho add b %d", b.cookie)}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("retry events %q, want %q", got, want)
	}
	if n := f.called("h"); n != 1 {
		t.Errorf("host-network pod looked up %d times, want once", n)
	}
	// Once h leaves the config it is forgotten; a later pod with its uid
	// (not possible in Kubernetes, but cheap) would be looked up again.
	if err := r.sync(config(kubeWorkload("a", true), kubeWorkload("b", true))); err != nil || len(r.skipped) != 0 {
		t.Fatalf("sync = %v, skipped = %v", err, r.skipped)
	}
}

// TestKubeOptOutOrder: a pod that lost its enrollment but still runs is
// released from the datapath first and then taken from ztunnel (which
// drains it); a pod that left is removed from ztunnel first.
func TestKubeOptOutOrder(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	r, f, dp, ev := newKubeReconciler(t)
	f.set("a", a, nil)
	f.set("b", b, nil)
	if err := r.sync(config(kubeWorkload("a", true), kubeWorkload("b", true))); err != nil {
		t.Fatal(err)
	}
	ev.take()
	if err := r.sync(config(kubeWorkload("b", false))); err != nil {
		t.Fatal(err)
	}
	want := []string{"ho del a", fmt.Sprintf("dp unenroll %d", a.cookie), fmt.Sprintf("dp unenroll %d", b.cookie), "ho del b"}
	if got := ev.take(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	if len(dp.has()) != 0 || len(r.pods) != 0 {
		t.Fatalf("left enrolled %v, pods %v", dp.has(), r.pods)
	}
}
