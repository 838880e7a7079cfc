package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

var quiet = slog.New(slog.DiscardHandler)

// podsTable is a Pods fake.
type podsTable map[string][]*corev1.Pod

func (p podsTable) PodsOnNode(node string) []*corev1.Pod { return p[node] }

// saTable is a ServiceAccounts fake: the namespace/name pairs that exist.
type saTable map[string]bool

func (s saTable) ServiceAccountExists(ns, name string) bool { return s[ns+"/"+name] }

func pod(ns, sa string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa + "-pod"},
		Spec: corev1.PodSpec{ServiceAccountName: sa}, Status: corev1.PodStatus{Phase: phase}}
}

func newCA(t *testing.T, pods Pods, sas ServiceAccounts) *CA {
	t.Helper()
	cert, key, err := pki.GenerateCA("td.test", time.Hour*24*365)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{CertPEM: cert, KeyPEM: key, TrustDomain: "td.test", Lifetime: 2 * time.Hour,
		Pods: pods, ServiceAccounts: sas, Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func csrPEM(t *testing.T, key any, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSign(t *testing.T) {
	c := newCA(t, podsTable{"n1": {pod("apps", "web", corev1.PodRunning), pod("apps", "done", corev1.PodSucceeded),
		pod("apps", "orphan", corev1.PodRunning)}, "n2": {pod("apps", "db", corev1.PodRunning)}},
		saTable{"apps/web": true, "apps/done": true, "apps/db": true})
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	uri := func(s string) []*url.URL { u, _ := url.Parse(s); return []*url.URL{u} }
	web := "spiffe://td.test/ns/apps/sa/web"
	tests := []struct {
		name   string
		csr    []byte
		reason string // "" = issued
	}{
		{"pod on the caller's node", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri(web)}), ""},
		{"rsa key", csrPEM(t, rsaKey, &x509.CertificateRequest{URIs: uri(web)}), ReasonBadCSR},
		{"p-384 key", csrPEM(t, ec384, &x509.CertificateRequest{URIs: uri(web)}), ReasonBadCSR},
		{"extra dns san", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri(web), DNSNames: []string{"evil.example"}}), ReasonBadCSR},
		{"no spiffe id", csrPEM(t, ec, &x509.CertificateRequest{DNSNames: []string{"web"}}), ReasonBadCSR},
		{"pod on another node", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri("spiffe://td.test/ns/apps/sa/db")}), ReasonNoPod},
		{"service account deleted, pod still running", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri("spiffe://td.test/ns/apps/sa/orphan")}), ReasonNoSA},
		{"neither pod nor service account", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri("spiffe://td.test/ns/apps/sa/ghost")}), ReasonNoPod},
		{"finished pod", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri("spiffe://td.test/ns/apps/sa/done")}), ReasonNoPod},
		{"other trust domain", csrPEM(t, ec, &x509.CertificateRequest{URIs: uri("spiffe://other/ns/apps/sa/web")}), ReasonTrustDomain},
		{"not pem", []byte("hello"), ReasonBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(c.refused.WithLabelValues(tt.reason))
			chainPEM, err := c.Sign(context.Background(), "n1", tt.csr)
			if tt.reason != "" {
				var re *RefusedError
				if !errors.As(err, &re) || re.Reason != tt.reason {
					t.Fatalf("Sign = %v, want refusal %s", err, tt.reason)
				}
				if got := testutil.ToFloat64(c.refused.WithLabelValues(tt.reason)); got != before+1 {
					t.Errorf("refused{%s} = %v, want %v", tt.reason, got, before+1)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			blk, _ := pem.Decode(chainPEM)
			leaf, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := spiffe.FromCertificate(leaf); id.String() != web {
				t.Errorf("issued for %s, want %s", id, web)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(c.Root()), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("leaf does not verify: %v", err)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 2*time.Hour+time.Minute || life < 2*time.Hour-10*time.Minute {
				t.Errorf("lifetime %s, want about 2h", life)
			}
			if testutil.ToFloat64(c.issued) != 1 {
				t.Errorf("issued counter = %v, want 1", testutil.ToFloat64(c.issued))
			}
		})
	}
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// TestEnsureRoot: the first start creates the Secret, later starts (and a
// concurrent replica) reuse it.
func TestEnsureRoot(t *testing.T) {
	client := fake.NewClientset()
	ctx := context.Background()
	var wg sync.WaitGroup
	certs := make([][]byte, 4)
	for i := range certs {
		wg.Go(func() {
			r, err := EnsureRoot(ctx, client, "ns", "agentmesh-ca", "td.test", quiet)
			if err != nil {
				t.Error(err)
			}
			certs[i] = r.CertPEM
		})
	}
	wg.Wait()
	for i := range certs {
		if string(certs[i]) != string(certs[0]) {
			t.Fatalf("replica %d got another root", i)
		}
	}
	again, err := EnsureRoot(ctx, client, "ns", "agentmesh-ca", "td.test", quiet)
	if err != nil || string(again.CertPEM) != string(certs[0]) {
		t.Fatalf("restart: root changed (err %v)", err)
	}
	if _, err := New(Options{CertPEM: again.CertPEM, KeyPEM: again.KeyPEM, TrustDomain: "other.td"}); err == nil {
		t.Error("New accepted a root of another trust domain")
	}
	s, err := client.CoreV1().Secrets("ns").Get(ctx, "agentmesh-ca", metav1.GetOptions{})
	if err != nil || len(s.Data[SecretKeyKey]) == 0 {
		t.Fatalf("secret: %v", err)
	}
}

func TestPublishRoot(t *testing.T) {
	client := fake.NewClientset()
	ctx := context.Background()
	for _, root := range []string{"one", "two"} {
		if err := PublishRoot(ctx, client, "ns", []byte(root)); err != nil {
			t.Fatal(err)
		}
		cm, err := client.CoreV1().ConfigMaps("ns").Get(ctx, RootConfigMap, metav1.GetOptions{})
		if err != nil || cm.Data[RootCertKey] != root {
			t.Fatalf("configmap after publishing %q: %v %v", root, cm, err)
		}
	}
}

func TestServingRenews(t *testing.T) {
	c := newCA(t, nil, nil)
	s, err := c.NewServing([]string{"ctl.example", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetCertificate(nil)
	if _, err := first.Leaf.Verify(x509.VerifyOptions{Roots: pool(c.Root()), DNSName: "ctl.example"}); err != nil {
		t.Fatalf("serving cert: %v", err)
	}
	if len(first.Leaf.IPAddresses) != 1 {
		t.Errorf("ip sans %v, want 127.0.0.1", first.Leaf.IPAddresses)
	}
	if again, _ := s.GetCertificate(nil); again != first {
		t.Error("certificate reissued before it was due")
	}
	s.now = func() time.Time { return time.Now().Add(ServingLifetime * 3 / 4) }
	if renewed, _ := s.GetCertificate(nil); renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("certificate not renewed after two thirds of its life")
	}
}
