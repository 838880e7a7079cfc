package ztunnel

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/bpffs"
	"github.com/agentmesh/agentmesh/internal/freeport"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// pinMaps creates and pins the maps ztunnel opens, as agentd would.
func pinMaps(t *testing.T) (string, *ebpf.Map) {
	t.Helper()
	specs, err := bpf.MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bpffs.Ensure(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(bpffs.Path, fmt.Sprintf("amzt-test-%d", os.Getpid()))
	if err := os.MkdirAll(filepath.Join(dir, bpf.MapsDir), 0o700); err != nil {
		t.Fatalf("bpffs: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var listeners *ebpf.Map
	for _, name := range []string{bpf.MapOrigDst, bpf.MapListeners, bpf.MapDNSUpstream} {
		spec := specs[name].Copy()
		spec.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatalf("create map %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		if err := m.Pin(bpf.MapPin(dir, name)); err != nil {
			t.Fatalf("pin %s: %v", name, err)
		}
		if name == bpf.MapListeners {
			listeners = m
		}
	}
	return dir, listeners
}

// steerIn attaches the real sk_lookup program, steering by listeners (as
// agentd does with the pinned map), to each netns in nss until the test
// ends.
func steerIn(t *testing.T, listeners *ebpf.Map, nss ...*os.File) {
	t.Helper()
	o, err := bpf.Load(map[string]*ebpf.Map{bpf.MapListeners: listeners})
	if err != nil {
		t.Fatalf("load eBPF programs: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	for _, ns := range nss {
		l, err := link.AttachNetNs(int(ns.Fd()), o.Programs[bpf.ProgSkLookup])
		if err != nil {
			t.Fatalf("attach sk_lookup: %v", err)
		}
		t.Cleanup(func() { l.Close() })
	}
}

func countKeys(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	key := make([]byte, m.KeySize())
	n := 0
	var prev any
	for {
		if err := m.NextKey(prev, &key); err != nil {
			return n
		}
		n++
		k := append([]byte(nil), key...)
		prev = k
	}
}

// freeAddr is a loopback address with a port free right now, from below
// the ephemeral range (see internal/freeport).
func freeAddr(t *testing.T) string {
	t.Helper()
	addrs, err := freeport.Addrs(netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// TestRunWithAgentdHandoff runs the whole process: real pinned maps (real
// SOCKHASH registration of the pod sockets), the real agentd hand-off over a
// unix socket, the config file, the local CA, and the HTTP endpoints.
func TestRunWithAgentdHandoff(t *testing.T) {
	requireRoot(t)
	a, b := newNetns(t), newNetns(t)
	linkNetns(t, a, b, "rn", []string{"198.18.1.1/24"}, []string{"198.18.1.2/24"})
	pinDir, listeners := pinMaps(t)
	dir := t.TempDir()
	certPEM, keyPEM, err := pki.GenerateCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600)
	// A standalone file has no policies: the workloads get allow-all.
	fileCfg := testConfig(true)
	for i := range fileCfg.Workloads {
		fileCfg.Workloads[i].Authz = nil
	}
	if err := meshconfig.Save(filepath.Join(dir, "mesh.json"), fileCfg); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agentd.sock")
	ho, err := handoff.Listen(sock, discard)
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(context.Background())
	hdone := make(chan error, 1)
	go func() { hdone <- ho.Run(hctx) }()
	t.Cleanup(func() { hcancel(); <-hdone })
	for _, p := range []struct {
		uid, name string
		ns        *os.File
	}{{"uid-a", "client", a}, {"uid-b", "server", b}} {
		cookie, err := netns.Cookie(int(p.ns.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		w := testConfig(true)
		var ips = w.Workloads[0].IPs
		if p.uid == "uid-b" {
			ips = w.Workloads[2].IPs
		}
		ho.Upsert(handoff.Pod{UID: p.uid, Name: p.name, Namespace: "agents", IPs: ips, NetnsCookie: cookie}, p.ns)
	}

	admin, metrics, ready := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{
			"--node", "n1", "--config", filepath.Join(dir, "mesh.json"), "--pin-dir", pinDir,
			"--agentd-socket", sock, "--ca-cert", filepath.Join(dir, "ca.pem"), "--ca-key", filepath.Join(dir, "ca.key"),
			"--admin-addr", admin, "--metrics-addr", metrics, "--ready-addr", ready, "--log-level", "warn",
		}, io.Discard)
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})

	waitFor(t, "readiness 200", func() bool { return status(ready+"/healthz/ready") == http.StatusOK })
	var pods []PodStatus
	get(t, "http://"+admin+"/pods", &pods)
	if len(pods) != 2 || pods[0].State != stateReady || pods[1].State != stateReady {
		t.Fatalf("/pods = %+v", pods)
	}
	// A: 2 ips (v4, v6) x 2 ports; B: 2 ips x 2 ports.
	if n := countKeys(t, listeners); n != 8 {
		t.Errorf("listeners SOCKHASH has %d entries, want 8", n)
	}
	var check debug.Authz
	get(t, "http://"+admin+"/debug/authz?from=agents/client&to=agents/server&port=8080", &check)
	if check.Node != "n1" || check.MTLSMode != "PERMISSIVE" || !check.Decision.Allow || check.Decision.Reason != "namespace-default" {
		t.Errorf("/debug/authz on the file's config = %+v, want node n1, PERMISSIVE, allowed by default", check)
	}
	body := fetch(t, "http://"+metrics+"/metrics")
	if !strings.Contains(body, `ztunnel_pods{state="ready"} 2`) {
		t.Errorf("metrics lack ztunnel_pods ready 2:\n%s", grepLines(body, "ztunnel_"))
	}

	ho.Remove("uid-b")
	waitFor(t, "B's SOCKHASH entries removed", func() bool { return countKeys(t, listeners) == 4 })

	cancel()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if n := countKeys(t, listeners); n != 0 {
		t.Errorf("%d SOCKHASH entries left after shutdown", n)
	}
	if status(ready+"/healthz/ready") != 0 {
		t.Error("readiness endpoint still serving after Run returned")
	}
}

// status returns the HTTP status of GET http://addr, 0 on error.
func status(addr string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRunStopsWhileWaitingForMaps(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := pki.GenerateCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600)
	admin, metrics, ready := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{
			"--node", "n1", "--config", filepath.Join(dir, "mesh.json"), "--pin-dir", filepath.Join(dir, "no-pins"),
			"--agentd-socket", filepath.Join(dir, "none.sock"), "--ca-cert", filepath.Join(dir, "ca.pem"),
			"--ca-key", filepath.Join(dir, "ca.key"), "--admin-addr", admin, "--metrics-addr", metrics,
			"--ready-addr", ready, "--log-level", "error",
		}, io.Discard)
	}()
	waitFor(t, "readiness endpoint up", func() bool { return status(ready+"/healthz/ready") != 0 })
	if code := status(ready + "/healthz/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("ready while waiting for maps: %d, want 503", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run stopped while waiting for maps: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if status(ready+"/healthz/ready") != 0 {
		t.Error("readiness endpoint still serving after Run returned")
	}
}
