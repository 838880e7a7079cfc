package agentd

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/cnigate"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// gateEnv is agentd run with its CNI gate over a config file, a fake
// datapath on real namespaces, and an in-process ztunnel.
type gateEnv struct {
	t    *testing.T
	logs *testutil.LogBuffer
	o    *options
	ev   *eventLog
	dp   *fakeDatapath
	stop func() error
}

func startGateEnv(t *testing.T, withZtunnel bool) *gateEnv {
	t.Helper()
	log, logs := newLog(t)
	e := &gateEnv{t: t, logs: logs, ev: &eventLog{}}
	e.dp = newFakeDatapath(e.ev)
	dir := t.TempDir()
	e.o = &options{mode: configsource.Flags{Node: node, ConfigPath: filepath.Join(dir, "mesh.json")},
		socket: filepath.Join(dir, "run", "agentd.sock"), cniSocket: filepath.Join(dir, "run", "cni.sock"), cniWait: 300 * time.Millisecond,
		watchInterval: 20 * time.Millisecond, retryInterval: 50 * time.Millisecond}
	save(t, e.o.mode.ConfigPath, &meshconfig.Config{TrustDomain: "cluster.local"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, e.o, log, func(loader.Options) (Datapath, error) { return e.dp, nil }) }()
	e.stop = func() error { cancel(); return <-done }
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitForFile(t, e.o.socket)
	waitForFile(t, e.o.cniSocket)
	if withZtunnel {
		startZtunnel(t, e.o.socket, e.ev, log)
		e.ev.waitFor(t, "zt snapshot ")
	}
	return e
}

// save writes a config of ws as the controller sends them (no netns) and
// waits until agentd has applied it.
func (e *gateEnv) save(ws ...meshconfig.Workload) {
	e.t.Helper()
	n := strings.Count(e.logs.String(), "mesh config loaded")
	save(e.t, e.o.mode.ConfigPath, &meshconfig.Config{TrustDomain: "cluster.local", Workloads: ws})
	e.waitLog("mesh config loaded", n+1)
}

// waitLog waits until agentd logged s n times.
func (e *gateEnv) waitLog(s string, n int) {
	e.t.Helper()
	waitFor(e.t, fmt.Sprintf("%d× %q in the log", n, s), func() bool { return strings.Count(e.logs.String(), s) >= n })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// pending is a pod scheduled on this node without an address yet.
func pending(uid string, enrolled bool) meshconfig.Workload {
	return meshconfig.Workload{UID: uid, Name: "agent-" + uid, Namespace: "team", ServiceAccount: "sa", Node: node, Enrolled: enrolled}
}

// add is the plugin's ADD for pod uid with sandbox netns ns and address ip.
func (e *gateEnv) add(uid string, ns *testNetns, ip string) (cnigate.Reply, error) {
	f, err := os.Open(ns.path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cnigate.Call(ctx, e.o.cniSocket, cnigate.Request{ContainerID: "sandbox-" + uid, Netns: ns.path,
		Namespace: "team", Name: "agent-" + uid, UID: uid, IPs: []netip.Addr{netip.MustParseAddr(ip)}}, f)
}

// TestGateCapturesBeforeStart: an enrolled pod the config names (without
// an address yet) is enrolled and handed to ztunnel, gated, before the
// plugin's ADD returns; the config that later brings its address changes
// nothing. A pod that is not enrolled passes untouched.
func TestGateCapturesBeforeStart(t *testing.T) {
	e := startGateEnv(t, true)
	a, b := newNetns(t), newNetns(t)
	e.save(pending("a", true), pending("b", false))
	r, err := e.add("a", a, "198.18.1.1")
	if err != nil || !r.Captured || r.Err != "" {
		t.Fatalf("ADD of enrolled pod a: %+v, %v; want captured", r, err)
	}
	// The gated add was acknowledged before the reply: no waiting here.
	if got := e.ev.take(); strings.Join(got, "|") != fmt.Sprintf("dp enroll %d|zt gated add a %d", a.cookie, a.cookie) {
		t.Fatalf("when ADD returned: events %q", got)
	}
	r, err = e.add("b", b, "198.18.1.2")
	if err != nil || r.Captured || !strings.Contains(r.Reason, "not enrolled") {
		t.Errorf("ADD of pod b, not enrolled: %+v, %v", r, err)
	}
	withIP := pending("a", true)
	withIP.IPs = []netip.Addr{netip.MustParseAddr("198.18.1.1")}
	e.save(withIP, pending("b", false))
	e.waitLog("reconciled", strings.Count(e.logs.String(), "mesh config loaded"))
	if got := e.ev.get(); len(got) != 0 {
		t.Errorf("the config bringing a's address caused %q", got)
	}
	e.save(pending("b", false)) // a is deleted
	e.ev.waitFor(t, "zt del a", fmt.Sprintf("dp unenroll %d", a.cookie))
}

// TestGateHoldsUntilConfig: a pod the config does not name yet waits for
// the config that does (within --cni-wait); one it never names starts
// uncaptured after the wait, and a new sandbox of a captured pod replaces
// the old one.
func TestGateHoldsUntilConfig(t *testing.T) {
	e := startGateEnv(t, true)
	c, d := newNetns(t), newNetns(t)
	done := make(chan cnigate.Reply, 1)
	go func() {
		r, err := e.add("c", c, "198.18.1.3")
		if err != nil {
			t.Errorf("ADD c: %v", err)
		}
		done <- r
	}()
	e.waitLog("CNI gate: holding pod until the mesh config names it", 1)
	e.save(pending("c", true))
	if r := <-done; !r.Captured {
		t.Fatalf("ADD of pod c once the config named it: %+v", r)
	}
	e.ev.waitFor(t, fmt.Sprintf("dp enroll %d", c.cookie), fmt.Sprintf("zt gated add c %d", c.cookie))

	r, err := e.add("never", d, "198.18.1.4")
	if err != nil || r.Captured || r.Err != "" || !strings.Contains(r.Reason, "not in the mesh config after") {
		t.Errorf("ADD of a pod the config never names: %+v, %v; want uncaptured with the reason", r, err)
	}
	if got := e.ev.get(); len(got) != 0 {
		t.Errorf("a pod the config never named caused %q", got)
	}

	// The kubelet retried c's sandbox: a new netns for the same pod.
	c2 := newNetns(t)
	if r, err := e.add("c", c2, "198.18.1.5"); err != nil || !r.Captured {
		t.Fatalf("ADD of c's new sandbox: %+v, %v", r, err)
	}
	e.ev.waitFor(t, "zt del c", fmt.Sprintf("dp unenroll %d", c.cookie), fmt.Sprintf("dp enroll %d", c2.cookie), fmt.Sprintf("zt gated add c %d", c2.cookie))
}

// TestGateFailsClosedWithoutZtunnel: with no ztunnel to serve an enrolled
// pod, the ADD fails (the kubelet retries the sandbox) rather than let the
// pod start with nothing behind its capture.
func TestGateFailsClosedWithoutZtunnel(t *testing.T) {
	e := startGateEnv(t, false)
	a := newNetns(t)
	e.save(pending("a", true))
	r, err := e.add("a", a, "198.18.1.1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Captured || !strings.Contains(r.Err, "no ztunnel connected") {
		t.Errorf("ADD without ztunnel: %+v; want an error", r)
	}
}

// TestRunChainsThePlugin: agentd run with --cni-conf-dir chains the plugin
// into the node's network once its gate listens, and takes it out again
// when it stops, so no pod waits on an agentd that is gone.
func TestRunChainsThePlugin(t *testing.T) {
	log, _ := newLog(t)
	dir := t.TempDir()
	o := &options{mode: configsource.Flags{Node: node, ConfigPath: filepath.Join(dir, "mesh.json")},
		socket: filepath.Join(dir, "run", "agentd.sock"), cniSocket: filepath.Join(dir, "run", "cni.sock"), cniWait: time.Second,
		cniConfDir: filepath.Join(dir, "net.d"), cniBinDir: filepath.Join(dir, "bin"), cniPlugin: filepath.Join(dir, "plugin"),
		cniPluginSocket: "/var/run/agentmesh/cni.sock", watchInterval: 20 * time.Millisecond, retryInterval: 50 * time.Millisecond}
	for _, d := range []string{o.cniConfDir, o.cniBinDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeConf(t, o.cniPlugin, "plugin")
	primary := filepath.Join(o.cniConfDir, "10-lab.conflist")
	writeConf(t, primary, labConflist)
	save(t, o.mode.ConfigPath, &meshconfig.Config{TrustDomain: "cluster.local"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, log, func(loader.Options) (Datapath, error) { return newFakeDatapath(&eventLog{}), nil })
	}()
	waitFor(t, "the plugin chained", func() bool { return pluginTypes(t, primary) == "bridge,portmap,agentmesh-cni" })
	_, plugins, _ := readConflist(primary)
	if s := plugins[2]["socket"]; s != o.cniPluginSocket {
		t.Errorf("the plugin's socket %v, want %s", s, o.cniPluginSocket)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := pluginTypes(t, primary); got != "bridge,portmap" {
		t.Errorf("after agentd stopped the chain is %s", got)
	}
}

// TestGateWithoutUID: a runtime that does not set K8S_POD_UID gets its
// pod found by namespace and name on this node.
func TestGateWithoutUID(t *testing.T) {
	e := startGateEnv(t, true)
	a := newNetns(t)
	other := pending("a-elsewhere", true)
	other.Name, other.Node = "agent-a", "node-2" // same name, another node
	e.save(other, pending("a", true))
	f, err := os.Open(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := cnigate.Call(context.Background(), e.o.cniSocket, cnigate.Request{Netns: a.path, Namespace: "team", Name: "agent-a",
		IPs: []netip.Addr{netip.MustParseAddr("198.18.1.1")}}, f)
	if err != nil || !r.Captured {
		t.Fatalf("ADD without a uid: %+v, %v", r, err)
	}
	e.ev.waitFor(t, fmt.Sprintf("dp enroll %d", a.cookie), fmt.Sprintf("zt gated add a %d", a.cookie))
}

// TestRunGateSocketFails: a gate socket that cannot be made fails agentd
// run with the reason, leaving neither socket behind.
func TestRunGateSocketFails(t *testing.T) {
	log, _ := newLog(t)
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	writeConf(t, blocker, "not a directory")
	o := &options{mode: configsource.Flags{Node: node, ConfigPath: filepath.Join(dir, "mesh.json")},
		socket: filepath.Join(dir, "run", "agentd.sock"), cniSocket: filepath.Join(blocker, "cni.sock"), cniWait: time.Second,
		watchInterval: 20 * time.Millisecond, retryInterval: 50 * time.Millisecond}
	save(t, o.mode.ConfigPath, &meshconfig.Config{TrustDomain: "cluster.local"})
	err := run(context.Background(), o, log, func(loader.Options) (Datapath, error) { return newFakeDatapath(&eventLog{}), nil })
	if err == nil || !strings.Contains(err.Error(), "cni gate socket") {
		t.Fatalf("run = %v, want the gate socket's error", err)
	}
	if _, err := os.Stat(o.socket); !os.IsNotExist(err) {
		t.Errorf("hand-off socket left behind: %v", err)
	}
}

// TestGatesDropAbandoned: a held request whose plugin stopped waiting is
// dropped, and its netns closed, at the next request too, not only at the
// next config (which does not come while the controller is away).
func TestGatesDropAbandoned(t *testing.T) {
	log, _ := newLog(t)
	r, err := newReconciler(node, newFakeDatapath(&eventLog{}), recordingHandoff{&eventLog{}}, log)
	if err != nil {
		t.Fatal(err)
	}
	open := func() *os.File {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	var held gates
	old := &gateRequest{req: cnigate.Request{Namespace: "team", Name: "old", UID: "old"}, netns: open(), answer: make(chan gateAnswer, 1)}
	held.add(old, r, nil)
	if len(held) != 1 {
		t.Fatalf("held %d, want the request kept for a config", len(held))
	}
	old.abandoned.Store(true)
	held.add(&gateRequest{req: cnigate.Request{Namespace: "team", Name: "new", UID: "new"}, netns: open(), answer: make(chan gateAnswer, 1)}, r, nil)
	if len(held) != 1 || held[0].req.UID != "new" {
		t.Errorf("held %d requests, want only the new one", len(held))
	}
	if err := old.netns.Close(); err == nil {
		t.Error("the abandoned request's netns was still open")
	}
	held.close()
}
