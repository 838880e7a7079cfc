package agentd

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

const node = "node-1"

func workload(uid string, ns *testNetns, enrolled bool) meshconfig.Workload {
	w := meshconfig.Workload{UID: uid, Name: "agent-" + uid, Namespace: "team", ServiceAccount: "sa",
		Node: node, Enrolled: enrolled, IPs: []netip.Addr{netip.MustParseAddr("198.18.1.1")}}
	if ns != nil {
		w.Netns = ns.path
	}
	return w
}

func config(ws ...meshconfig.Workload) *meshconfig.Config {
	for i := range ws { // one stable IP per uid keeps the config valid
		ws[i].IPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 1, ws[i].UID[0]})}
	}
	return &meshconfig.Config{TrustDomain: "cluster.local", Workloads: ws}
}

// fixture is a reconciler wired to a fake datapath, a real hand-off server
// and an in-process ztunnel client.
type fixture struct {
	ev *eventLog
	dp *fakeDatapath
	r  *reconciler
}

func newFixture(t *testing.T, already ...uint64) *fixture {
	log, _ := newLog(t)
	ev := &eventLog{}
	dp := newFakeDatapath(ev, already...)
	srv, path := startHandoff(t, log)
	r, err := newReconciler(node, dp, srv, log)
	if err != nil {
		t.Fatal(err)
	}
	startZtunnel(t, path, ev, log)
	ev.waitFor(t, "zt snapshot ")
	return &fixture{ev: ev, dp: dp, r: r}
}

// waitEnrolled waits for an enroll and then an add for each pod.
func (f *fixture) waitEnrolled(t *testing.T, pods map[string]*testNetns) {
	t.Helper()
	var want []string
	for uid, ns := range pods {
		want = append(want, fmt.Sprintf("dp enroll %d", ns.cookie), fmt.Sprintf("zt add %s %d", uid, ns.cookie))
	}
	got := f.ev.waitForAnyOrder(t, want...)
	for uid, ns := range pods {
		requireBefore(t, got, fmt.Sprintf("dp enroll %d", ns.cookie), fmt.Sprintf("zt add %s %d", uid, ns.cookie))
	}
}

func TestReconcileEnrollsOnlyThisNodesEnrolledPods(t *testing.T) {
	a, b, c, d, g := newNetns(t), newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	f := newFixture(t)
	other := workload("c", c, true)
	other.Node = "node-2"
	cfg := config(workload("a", a, true), workload("b", b, true), other,
		workload("d", d, false), workload("e", nil, true), workload("g", g, true))
	cfg.Workloads[5].IPs = nil // scheduled, no address yet
	if err := f.r.sync(cfg); err != nil {
		t.Fatal(err)
	}
	f.waitEnrolled(t, map[string]*testNetns{"a": a, "b": b})
	if err := f.r.sync(cfg); err != nil { // no change, nothing to do
		t.Fatal(err)
	}
	if ev := f.ev.get(); len(ev) != 0 {
		t.Fatalf("an unchanged config caused %q", ev)
	}
}

// TestReconcileRemoveAndOptOutOrder: a pod that leaves (a) is taken from
// ztunnel before its capture ends (fail closed); a pod that stays but is
// no longer enrolled (b) is released from the datapath first, so its new
// connections go direct and are never refused (see optOut).
func TestReconcileRemoveAndOptOutOrder(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	f := newFixture(t)
	if err := f.r.sync(config(workload("a", a, true), workload("b", b, true))); err != nil {
		t.Fatal(err)
	}
	f.waitEnrolled(t, map[string]*testNetns{"a": a, "b": b})
	// a leaves the config, b gets Enrolled=false.
	if err := f.r.sync(config(workload("b", b, false))); err != nil {
		t.Fatal(err)
	}
	// Strict order: sync returns only after ztunnel acked each del.
	want := []string{"zt del a", fmt.Sprintf("dp unenroll %d", a.cookie), fmt.Sprintf("dp unenroll %d", b.cookie), "zt del b"}
	if got := f.ev.take(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	if got := f.dp.has(); len(got) != 0 {
		t.Fatalf("still enrolled: %v", got)
	}
}

func TestReconcileNewNetnsReplacesOld(t *testing.T) {
	old, repl := newNetns(t), newNetns(t)
	f := newFixture(t)
	if err := f.r.sync(config(workload("a", old, true))); err != nil {
		t.Fatal(err)
	}
	f.ev.waitFor(t, fmt.Sprintf("dp enroll %d", old.cookie), fmt.Sprintf("zt add a %d", old.cookie))
	if err := f.r.sync(config(workload("a", repl, true))); err != nil {
		t.Fatal(err)
	}
	f.ev.waitFor(t, "zt del a", fmt.Sprintf("dp unenroll %d", old.cookie),
		fmt.Sprintf("dp enroll %d", repl.cookie), fmt.Sprintf("zt add a %d", repl.cookie))
}

func TestReconcileAfterRestartKeepsCaptureOfConfiguredPods(t *testing.T) {
	a, b, gone := newNetns(t), newNetns(t), newNetns(t)
	// An earlier run left a, b and gone enrolled.
	f := newFixture(t, a.cookie, b.cookie, gone.cookie)
	bad := workload("b", b, true)
	f.dp.setFail(b.path, errInjected)
	cfg := config(workload("a", a, true), bad)
	err := f.r.sync(cfg)
	if !errors.Is(err, errInjected) {
		t.Fatalf("sync error = %v, want the injected one for b", err)
	}
	// a is handed off; b failed, so nothing an earlier run enrolled may go.
	f.ev.waitFor(t, fmt.Sprintf("dp enroll %d", a.cookie), fmt.Sprintf("zt add a %d", a.cookie))
	f.dp.setFail(b.path, nil)
	if err := f.r.sync(cfg); err != nil {
		t.Fatal(err)
	}
	// The add to ztunnel is asynchronous, the orphan's unenroll is not.
	f.ev.waitForAnyOrder(t, fmt.Sprintf("dp enroll %d", b.cookie), fmt.Sprintf("zt add b %d", b.cookie),
		fmt.Sprintf("dp unenroll %d", gone.cookie))
	want := []uint64{a.cookie, b.cookie}
	if got := f.dp.has(); fmt.Sprint(got) != fmt.Sprint(sortedKeys(map[uint64]bool{want[0]: true, want[1]: true})) {
		t.Fatalf("enrolled = %v, want %v", got, want)
	}
}

func TestReconcileOnePodFailingDoesNotBlockOthers(t *testing.T) {
	b := newNetns(t)
	f := newFixture(t)
	missing := workload("a", nil, true)
	missing.Netns = "/nonexistent/netns"
	err := f.r.sync(config(missing, workload("b", b, true)))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "team/agent-a") {
		t.Fatalf("sync error = %v, want open failure naming team/agent-a", err)
	}
	f.ev.waitFor(t, fmt.Sprintf("dp enroll %d", b.cookie), fmt.Sprintf("zt add b %d", b.cookie))
}
