package ztunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// TestControllerSource runs Kubernetes mode's source against the real
// controller stream server and CA: the first config opens the readiness
// gate, the trust bundle reaches the identity manager before it, and the
// manager's certificates come from the controller's CA (only for pods on
// this node).
func TestControllerSource(t *testing.T) {
	ctl := startTestController(t, map[string][]*corev1.Pod{"n1": {kubePod("client-0", "client")}})
	o, err := parseFlags([]string{"--node", "n1", "--controller", ctl.addr, "--controller-ca", ctl.caFile,
		"--token-file", ctl.tokenFile("n1"), "--controller-server-name", "127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, err := newSource(o, discard)
	if err != nil {
		t.Fatal(err)
	}
	if src.bundle() != nil {
		t.Fatal("kubernetes mode starts with a trust bundle; it must come from the controller")
	}
	certs := identity.NewManager(identity.ManagerOptions{Signer: src.signer(), Logger: discard})
	applied := make(chan *meshconfig.Config, 10)
	var mu sync.Mutex
	var order []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.run(ctx, func(c *meshconfig.Config) {
			mu.Lock()
			order = append(order, "config")
			mu.Unlock()
			applied <- c
		}, func(p *x509.CertPool) {
			mu.Lock()
			order = append(order, "bundle")
			mu.Unlock()
			certs.SetBundle(p)
		})
	}()
	defer func() {
		cancel()
		<-done
		if err := src.close(); err != nil {
			t.Error(err)
		}
	}()

	ready := gateReady(src.ready, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("node ready")) }))
	if code, body := probe(ready); code != http.StatusServiceUnavailable || body != errNoConfigYet.Error()+"\n" {
		t.Fatalf("readiness before the first config: %d %q", code, body)
	}
	select {
	case <-applied:
		t.Fatal("config applied before the controller had a view")
	case <-time.After(200 * time.Millisecond):
	}
	ctl.update(testConfig(true))
	select {
	case c := <-applied:
		if len(c.Workloads) != 3 || c.TrustDomain != td {
			t.Fatalf("applied %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no config from the controller")
	}
	// Ready once apply has returned, which is after the test saw the
	// config: wait for it.
	waitFor(t, "readiness after the first config", func() bool {
		code, body := probe(ready)
		return code == http.StatusOK && body == "node ready"
	})
	mu.Lock()
	if len(order) != 2 || order[0] != "bundle" {
		t.Errorf("callbacks %v, want the bundle before the config", order)
	}
	mu.Unlock()
	if certs.Bundle() == nil || !certs.Bundle().Equal(mustPool(t, ctl.rootPEM)) {
		t.Fatal("identity manager did not get the controller's root as trust bundle")
	}

	client := spiffe.New(td, "agents", "client")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := certs.Ensure(sctx, client); err != nil {
		t.Fatalf("certificate from the controller: %v", err)
	}
	c, err := certs.Certificate(client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: mustPool(t, ctl.rootPEM), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("certificate not from the controller's root: %v", err)
	}
	if got := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); got > 3*time.Hour {
		t.Errorf("certificate lifetime %s: the controller's 2h should apply", got)
	}
	// server runs on no pod of n1: refused, no certificate.
	fctx, fcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer fcancel()
	if err := certs.Ensure(fctx, spiffe.New(td, "agents", "server")); err == nil {
		t.Error("controller signed for an identity with no pod on the node")
	}
	if got := ctl.issued(); got != 1 {
		t.Errorf("controller issued %v certificates, want 1", got)
	}
}

func probe(h http.Handler) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz/ready", nil))
	return rec.Code, rec.Body.String()
}

func mustPool(t *testing.T, pem []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatal(errors.New("no certificates in pem"))
	}
	return p
}

// TestStandaloneAuthzFill: the file source gives workloads without "authz"
// allowAll and keeps an explicit one; the controller source fills nothing.
func TestStandaloneAuthzFill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.json")
	file := `{"trustDomain":"cluster.local","workloads":[
	  {"uid":"u1","name":"open","namespace":"agents","serviceAccount":"open","node":"n1","ips":["198.18.1.1"],"enrolled":true},
	  {"uid":"u2","name":"locked","namespace":"agents","serviceAccount":"locked","node":"n1","ips":["198.18.1.2"],"enrolled":true,
	   "authz":{"mtlsMode":"STRICT","default":"Deny","probePorts":[8080],"policies":[{"namespace":"agents","name":"p","action":"Allow","rules":[{"index":0}]}]}}]}`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	src := &source{cfg: newConfigSource(t, configsource.Flags{Node: "n1", ConfigPath: path}), first: make(chan struct{})}
	applied := make(chan *meshconfig.Config, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.run(ctx, func(c *meshconfig.Config) {
			select {
			case applied <- c:
			default:
			}
		}, nil)
	}()
	var c *meshconfig.Config
	select {
	case c = <-applied:
	case <-time.After(5 * time.Second):
		t.Fatal("no config applied")
	}
	cancel()
	<-done
	idx := meshconfig.NewIndex(c)
	if got := idx.ByUID("u1").Authz; !cmp.Equal(got, allowAll()) {
		t.Errorf("workload without authz got %+v, want %+v", got, allowAll())
	}
	locked := idx.ByUID("u2").Authz
	if locked == nil || locked.MTLSMode != policy.MTLSStrict || locked.Default != policy.ActionDeny || len(locked.Policies) != 1 ||
		!slices.Equal(locked.ProbePorts, []uint16{8080}) {
		t.Errorf("explicit authz not kept: %+v", locked)
	}
	// Each filled workload has its own target.
	c2, _ := meshconfig.Parse([]byte(file))
	c2.Workloads = append(c2.Workloads, c2.Workloads[0])
	c2.Workloads[2].UID = "u3"
	fillStandaloneAuthz(c2)
	if c2.Workloads[0].Authz == c2.Workloads[2].Authz {
		t.Error("filled workloads share one target")
	}

	// Kubernetes mode: nil stays nil (no policy data: deny).
	var got *meshconfig.Config
	cs := &source{cfg: newConfigSource(t, configsource.Flags{Node: "n1", Controller: "ctl:15012", ControllerCA: "ca.pem", TokenFile: "tok"}), first: make(chan struct{})}
	kc, _ := meshconfig.Parse([]byte(file))
	cs.applier(func(c *meshconfig.Config) { got = c })(kc)
	if got.Workloads[0].Authz != nil {
		t.Errorf("controller source filled in authz: %+v", got.Workloads[0].Authz)
	}
}

// TestWaitConfigured: waitConfigured returns at once when the first
// config is applied, and false when its context ends before.
func TestWaitConfigured(t *testing.T) {
	s := &source{cfg: newConfigSource(t, configsource.Flags{Node: "n1", Controller: "ctl:15012", ControllerCA: "ca.pem", TokenFile: "tok"}), first: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.waitConfigured(ctx) {
		t.Error("configured before any config")
	}
	done := make(chan bool, 1)
	go func() { done <- s.waitConfigured(context.Background()) }()
	apply := s.applier(func(*meshconfig.Config) {})
	apply(&meshconfig.Config{})
	select {
	case ok := <-done:
		if !ok {
			t.Error("waitConfigured = false after a config was applied")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitConfigured still waits after a config was applied")
	}
	apply(&meshconfig.Config{}) // a second config
	if !s.waitConfigured(ctx) {
		t.Error("waitConfigured = false after configs were applied")
	}
}

func newConfigSource(t *testing.T, f configsource.Flags) *configsource.Source {
	t.Helper()
	s, err := configsource.New(f, configsource.Options{Component: configapi.ComponentZtunnel, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
