package ztunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// TestRunKubernetesMode runs the whole process in Kubernetes mode against
// the controller's real stream server and CA: readiness waits for the first
// config, the pods' certificates come from the controller, the trust bundle
// from the stream (a peer with a certificate of the controller's root gets
// through HBONE to the app), and when the controller goes away ztunnel
// keeps serving with the last config and its certificates.
func TestRunKubernetesMode(t *testing.T) {
	requireRoot(t)
	a, b := newNetns(t), newNetns(t)
	linkNetns(t, a, b, "kr", []string{"198.18.1.1/24", "fd00:18::1/64"}, []string{"198.18.1.2/24", "fd00:18::2/64"})
	serveEcho(t, listenIn(t, b, ":8080"))
	pinDir, listeners := pinMaps(t)
	steerIn(t, listeners, b) // B's HBONE port reaches ztunnel's one listener
	ctl := startTestController(t, map[string][]*corev1.Pod{"n1": {kubePod("client-0", "client"), kubePod("server-0", "server")}})
	sock := startHandoffWith(t, map[string]*os.File{"uid-a": a, "uid-b": b})

	admin, metrics, ready := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{
			"--node", "n1", "--controller", ctl.addr, "--controller-ca", ctl.caFile, "--token-file", ctl.tokenFile("n1"),
			"--pin-dir", pinDir, "--agentd-socket", sock,
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

	// The node has its pods from agentd but no config yet.
	waitFor(t, "readiness to wait for the controller", func() bool {
		return strings.Contains(body(ready+"/healthz/ready"), errNoConfigYet.Error())
	})
	time.Sleep(300 * time.Millisecond)
	if got := body(ready + "/healthz/ready"); !strings.Contains(got, errNoConfigYet.Error()) {
		t.Fatalf("readiness without a config from the controller: %q", got)
	}

	ctl.update(testConfig(true))
	waitFor(t, "readiness 200", func() bool { return status(ready+"/healthz/ready") == http.StatusOK })
	var certs []identity.CertInfo
	get(t, "http://"+admin+"/certs", &certs)
	if len(certs) != 2 || certs[0].Serial == "" || certs[1].Serial == "" {
		t.Fatalf("/certs = %+v, want client and server certificates", certs)
	}
	if got := ctl.issued(); got != 2 {
		t.Errorf("controller issued %v certificates, want 2", got)
	}
	// A peer trusting only the controller's root reaches B's app through
	// ztunnel: B's certificate is the controller's, and ztunnel verifies
	// the peer with the bundle from the stream.
	if got, err := hboneRoundTrip(t, ctl, a, "via-controller"); got != "echo:via-controller" {
		t.Fatalf("hbone round trip = %q, %v", got, err)
	}

	ctl.stop()
	time.Sleep(500 * time.Millisecond) // the stream notices and retries
	if code := status(ready + "/healthz/ready"); code != http.StatusOK {
		t.Errorf("readiness with the controller away: %d, want 200 (last good config)", code)
	}
	var cfg meshconfig.Config
	get(t, "http://"+admin+"/config", &cfg)
	if len(cfg.Workloads) != 3 {
		t.Errorf("config with the controller away has %d workloads, want the last 3", len(cfg.Workloads))
	}
	if got, err := hboneRoundTrip(t, ctl, a, "controller-away"); got != "echo:controller-away" {
		t.Fatalf("hbone round trip with the controller away = %q, %v", got, err)
	}

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
}

// hboneRoundTrip opens a fresh HBONE connection from A's netns to B's
// 15008 as A's identity (certificate from the controller's root) and echoes
// msg through B's app.
func hboneRoundTrip(t *testing.T, ctl *testController, a *os.File, msg string) (string, error) {
	t.Helper()
	src, dst := spiffe.New(td, "agents", "client"), spiffe.New(td, "agents", "server")
	m := identity.NewManager(identity.ManagerOptions{Signer: ctl.local, Bundle: mustPool(t, ctl.rootPEM), Logger: discard})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Ensure(ctx, src); err != nil {
		t.Fatal(err)
	}
	c := hbone.NewClient(hbone.ClientOptions{Logger: discard})
	defer c.Close()
	conn, err := c.Dial(ctx, hbone.Target{
		SrcID: src, DstID: dst, SrcIP: ipA,
		HBONEAddr: netip.AddrPortFrom(ipB, 15008), Authority: appB,
		TLS: m.ClientTLSConfig(src, dst),
		Dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return netns.DialTCP(ctx, int(a.Fd()), addr, nil)
		},
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return roundTrip(conn, msg)
}

// startHandoffWith serves agentd's hand-off socket with pods already
// upserted (uid-a is "client", uid-b "server" of testConfig).
func startHandoffWith(t *testing.T, pods map[string]*os.File) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agentd.sock")
	ho, err := handoff.Listen(sock, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ho.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfg := testConfig(true)
	for uid, ns := range pods {
		w := meshconfig.NewIndex(cfg).ByUID(uid)
		cookie, err := netns.Cookie(int(ns.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		ho.Upsert(handoff.Pod{UID: uid, Name: w.Name, Namespace: w.Namespace, IPs: w.IPs, NetnsCookie: cookie}, ns) // dups ns
	}
	return sock
}

// body returns the body of GET http://url, "" on error.
func body(url string) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
