package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

var _ identity.Signer = configclient.RemoteSigner{}

// recorder is an OnConfig that refuses configs with more than max workloads.
type recorder struct {
	max     int
	mu      sync.Mutex
	applied [][]string // workload names of each accepted config
	calls   int
}

func (r *recorder) onConfig(c *meshconfig.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if len(c.Workloads) > r.max {
		return errTooMany
	}
	r.applied = append(r.applied, names(c.Workloads))
	return nil
}

var errTooMany = errors.New("too many workloads")

func (r *recorder) last() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return nil, r.calls
	}
	return r.applied[len(r.applied)-1], r.calls
}

// waitApplied waits until the last accepted config has exactly want.
func (r *recorder) waitApplied(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got, _ := r.last(); slices.Equal(got, want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, _ := r.last()
	t.Fatalf("last applied config has %v, want %v", got, want)
}

func (h *harness) runClient(tokFile, node string, onConfig func(*meshconfig.Config) error) *configclient.Client {
	h.t.Helper()
	c, err := configclient.New(configclient.Options{Addr: h.addr, CAFile: h.caFile, TokenFile: tokFile,
		Node: node, Component: configapi.ComponentZtunnel, OnConfig: onConfig,
		Logger: testutil.TLogger(h.t, slog.LevelError)})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("client run: %v", err)
		}
		c.Close()
	})
	return c
}

func TestClientNackResumeAndRestart(t *testing.T) {
	h := startController(t, nsObj("apps", true), nodeObj("n1"), podObj("apps", "p1", "web", "n1", "10.0.0.1"))
	tokFile := h.token("tok-1", nodeSA, "n1")
	rec := &recorder{max: 2}
	c := h.runClient(tokFile, "n1", rec.onConfig)
	rec.waitApplied(t, "p1")
	if c.TrustBundle() == nil {
		t.Fatal("no trust bundle after the first config")
	}
	h.createPod("apps", "p2", "web", "n2", "10.0.0.2")
	rec.waitApplied(t, "p1", "p2")

	// p3 makes the config unacceptable: nacked, the previous one stays.
	h.createPod("apps", "p3", "web", "n2", "10.0.0.3")
	h.waitNack("n1", configapi.ComponentZtunnel)
	if got, _ := rec.last(); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("after a refused version the last config is %v, want [p1 p2]", got)
	}
	// Deltas keep applying on top of what the controller sent.
	h.client.CoreV1().Pods("apps").Delete(context.Background(), "p3", metav1.DeleteOptions{})
	h.client.CoreV1().Pods("apps").Delete(context.Background(), "p2", metav1.DeleteOptions{})
	h.createPod("apps", "p4", "web", "n2", "10.0.0.4")
	rec.waitApplied(t, "p1", "p4")

	// The controller goes away: the client keeps its config and calls
	// nothing; the token rotates meanwhile; a pod appears.
	bundle := c.TrustBundle()
	h.stop()
	_, calls := rec.last()
	h.createPod("apps", "p5", "web", "n1", "10.0.0.5")
	os.WriteFile(tokFile, []byte("tok-2"), 0o600)
	h.reviewer.add("tok-2", testNS, nodeSA, "n1")
	h.reviewer.remove("tok-1")
	time.Sleep(500 * time.Millisecond)
	if got, n := rec.last(); n != calls || !slices.Equal(got, []string{"p1", "p4"}) {
		t.Fatalf("while the controller is down: config %v after %d calls, want [p1 p4] after %d", got, n, calls)
	}
	// It comes back (same Secret, same root): the client resumes.
	h.start()
	rec.waitApplied(t, "p1", "p4") // p5 makes three: refused
	h.client.CoreV1().Pods("apps").Delete(context.Background(), "p4", metav1.DeleteOptions{})
	rec.waitApplied(t, "p1", "p5")
	if !c.TrustBundle().Equal(bundle) {
		t.Error("trust bundle changed across a controller restart: the CA root was not reused")
	}
}

func (h *harness) waitNack(node, component string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if h.status().Nodes[node][component].NackedVersion != 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("%s/%s never nacked", node, component)
}

func TestSignCertificate(t *testing.T) {
	h := startController(t, nsObj("apps", true), nodeObj("n1"), nodeObj("n2"), saObj("apps", "web"), saObj("apps", "db"),
		podObj("apps", "p1", "web", "n1", "10.0.0.1"), podObj("apps", "p2", "db", "n2", "10.0.0.2"),
		podObj("apps", "p3", "gone", "n1", "10.0.0.3"))
	c := h.runClient(h.token("tok", nodeSA, "n1"), "n1", nil)
	signer := configclient.RemoteSigner{Client: c}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	web := spiffe.New("td.test", "apps", "web")
	csr, _ := pki.NewCSR(key, web)
	chain, err := signer.Sign(ctx, csr, web, time.Hour)
	if err != nil {
		t.Fatalf("sign for a pod on the caller's node: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.rootPEM())
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify against the root: %v", err)
	}
	if life := chain[0].NotAfter.Sub(chain[0].NotBefore); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("lifetime %s, want the --cert-lifetime default 24h", life)
	}

	// ztunnel's certificate manager gets its certificates through it.
	m := identity.NewManager(identity.ManagerOptions{Signer: signer, Bundle: roots})
	if err := m.Ensure(ctx, web); err != nil {
		t.Fatalf("identity manager with the remote signer: %v", err)
	}
	if _, err := m.Certificate(web); err != nil {
		t.Fatal(err)
	}

	db := spiffe.New("td.test", "apps", "db") // p2 runs on n2, not the caller's node
	csr, _ = pki.NewCSR(key, db)
	_, err = signer.Sign(ctx, csr, db, time.Hour)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sign for a pod on another node: %v, want PermissionDenied", err)
	}
	if got := h.metric("agentmesh_controller_certificates_refused_total", ca.ReasonNoPod); got != "1" {
		t.Errorf("refused{reason=%s} = %q, want 1", ca.ReasonNoPod, got)
	}

	gone := spiffe.New("td.test", "apps", "gone") // p3 runs on n1, but its ServiceAccount does not exist
	csr, _ = pki.NewCSR(key, gone)
	_, err = signer.Sign(ctx, csr, gone, time.Hour)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sign for an identity without a ServiceAccount: %v, want PermissionDenied", err)
	}
	if got := h.metric("agentmesh_controller_certificates_refused_total", ca.ReasonNoSA); got != "1" {
		t.Errorf("refused{reason=%s} = %q, want 1", ca.ReasonNoSA, got)
	}
}
