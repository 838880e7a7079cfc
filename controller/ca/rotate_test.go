package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/internal/pki"
)

// roots parses every certificate of a bundle.
func bundleCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestStep: a request adds a next root to the bundle (the old one still
// signs), after the propagation time the next root signs and the old one
// is only trusted, after the leaf lifetime and the propagation time again
// it leaves the bundle.
func TestStep(t *testing.T) {
	certPEM, keyPEM, err := pki.GenerateCA("td.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tm := Timing{Propagation: time.Minute, LeafLifetime: time.Hour, TrustDomain: "td.test"}
	t0 := time.Now()
	r := Roots{CertPEM: certPEM, KeyPEM: keyPEM}

	if _, changed, wake, err := Step(r, t0, tm); err != nil || changed || !wake.IsZero() {
		t.Fatalf("no request: changed %v, wake %v, err %v; want nothing", changed, wake, err)
	}
	r.Requested = "now"
	r1, changed, wake, err := Step(r, t0, tm)
	if err != nil || !changed || r1.Phase != PhaseTrusting || !wake.Equal(t0.Add(time.Minute)) || r1.Requested != "" {
		t.Fatalf("request: %+v changed %v wake %v err %v", r1.Phase, changed, wake, err)
	}
	if !bytes.Equal(r1.CertPEM, certPEM) || len(r1.NextCertPEM) == 0 || len(bundleCerts(t, r1.BundlePEM())) != 2 {
		t.Fatalf("trusting: the old root must sign and both be trusted")
	}
	if _, changed, _, _ := Step(r1, t0.Add(59*time.Second), tm); changed {
		t.Fatal("switched before the propagation time")
	}
	r2, changed, wake, err := Step(r1, t0.Add(time.Minute), tm)
	if err != nil || !changed || r2.Phase != PhaseRetiring || !bytes.Equal(r2.CertPEM, r1.NextCertPEM) ||
		!bytes.Equal(r2.PreviousCertPEM, certPEM) || len(r2.KeyPEM) == 0 || r2.NextKeyPEM != nil {
		t.Fatalf("switch: phase %q changed %v err %v", r2.Phase, changed, err)
	}
	if want := t0.Add(time.Minute + time.Hour + time.Minute); !wake.Equal(want) {
		t.Errorf("retiring ends at %v, want %v", wake, want)
	}
	if len(bundleCerts(t, r2.BundlePEM())) != 2 {
		t.Error("retiring: both roots must be trusted")
	}
	if _, changed, _, _ := Step(r2, wake.Add(-time.Second), tm); changed {
		t.Fatal("the old root left before the leaf lifetime and propagation time")
	}
	r3, changed, _, err := Step(r2, wake, tm)
	if err != nil || !changed || r3.Phase != PhaseNone || r3.PreviousCertPEM != nil || !bytes.Equal(r3.CertPEM, r2.CertPEM) {
		t.Fatalf("retired: phase %q changed %v err %v", r3.Phase, changed, err)
	}
	if len(bundleCerts(t, r3.BundlePEM())) != 1 {
		t.Error("after the rotation one root is trusted")
	}

	// A root close to its end rotates on its own.
	tm.RotateBefore = 2 * time.Hour
	if r4, changed, _, err := Step(Roots{CertPEM: certPEM, KeyPEM: keyPEM}, t0, tm); err != nil || !changed || r4.Phase != PhaseTrusting {
		t.Errorf("root expiring within RotateBefore: phase %q changed %v err %v; want a rotation", r4.Phase, changed, err)
	}
}

// TestRootsSecretRoundTrip: what apply writes, RootsFromSecret reads; a
// Secret with a phase but without its root is refused.
func TestRootsSecretRoundTrip(t *testing.T) {
	certPEM, keyPEM, _ := pki.GenerateCA("td.test", time.Hour)
	nextPEM, nextKey, _ := pki.GenerateCA("td.test", time.Hour)
	since := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	want := Roots{CertPEM: certPEM, KeyPEM: keyPEM, NextCertPEM: nextPEM, NextKeyPEM: nextKey, Phase: PhaseTrusting, Since: since}
	s := newSecret(certPEM, keyPEM)
	want.apply(s)
	got, err := RootsFromSecret(s)
	if err != nil || !bytes.Equal(got.NextCertPEM, nextPEM) || got.Phase != PhaseTrusting || !got.Since.Equal(since) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	s.Data[SecretNextCertKey] = []byte("garbage")
	if _, err := RootsFromSecret(s); err == nil {
		t.Error("a Secret with an unparsable next root was accepted")
	}
	delete(s.Data, SecretNextKeyKey)
	if _, err := RootsFromSecret(s); err == nil {
		t.Error("a trusting Secret without the next key was accepted")
	}
}

// TestRotationRun: on a (fake) API, the leader takes a requested
// rotation through both phases; every version's roots reach OnRoots; the
// CA signs with the new root after the switch and its serving certificate
// follows.
func TestRotationRun(t *testing.T) {
	certPEM, keyPEM, _ := pki.GenerateCA("td.test", time.Hour)
	client := fake.NewClientset(newSecret(certPEM, keyPEM))
	c, err := New(Options{CertPEM: certPEM, KeyPEM: keyPEM, TrustDomain: "td.test", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := c.NewServing([]string{"ctl.example"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []Roots
	update := make(chan struct{}, 16)
	w := &Rotation{Client: client, Namespace: "ns", Name: "agentmesh-ca", Leads: func() bool { return true },
		Timing: Timing{Propagation: 200 * time.Millisecond, LeafLifetime: 300 * time.Millisecond, TrustDomain: "td.test"},
		OnRoots: func(r Roots) {
			if err := c.SetRoots(r); err != nil {
				t.Error(err)
			}
			mu.Lock()
			seen = append(seen, r)
			mu.Unlock()
			update <- struct{}{}
		}, Logger: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-update // the first version
	s, _ := client.CoreV1().Secrets("ns").Get(ctx, "agentmesh-ca", metav1.GetOptions{})
	s.Annotations = map[string]string{AnnotationRotate: "please"}
	if _, err := client.CoreV1().Secrets("ns").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		last := seen[n-1]
		mu.Unlock()
		if n >= 4 && last.Phase == PhaseNone {
			break
		}
		select {
		case <-update:
		case <-deadline:
			t.Fatalf("rotation did not finish; saw %d versions, last phase %q", n, last.Phase)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	phases := []string{}
	for _, r := range seen {
		phases = append(phases, phaseName(r.Phase))
	}
	want := []string{"none", "trusting", "retiring", "none"}
	if len(phases) != 4 || phases[1] != want[1] || phases[2] != want[2] || phases[3] != want[3] {
		t.Fatalf("phases %v, want %v", phases, want)
	}
	newRoot := seen[3].CertPEM
	if bytes.Equal(newRoot, certPEM) {
		t.Fatal("the root did not change")
	}
	if !bytes.Equal(c.BundlePEM(), newRoot) {
		t.Error("after the rotation the CA's bundle is not the new root alone")
	}
	cert, err := serving.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.CheckSignatureFrom(c.Root()); err != nil || !bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Root().Raw}), newRoot) {
		t.Errorf("serving certificate not from the new root: %v", err)
	}
	got, err := client.CoreV1().Secrets("ns").Get(ctx, "agentmesh-ca", metav1.GetOptions{})
	if err != nil || got.Annotations[AnnotationRotate] != "" || got.Data[SecretPreviousCertKey] != nil {
		t.Errorf("secret after the rotation: annotations %v, previous %d bytes", got.Annotations, len(got.Data[SecretPreviousCertKey]))
	}
}

func newSecret(certPEM, keyPEM []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "agentmesh-ca", Namespace: "ns"},
		Data: map[string][]byte{SecretCertKey: certPEM, SecretKeyKey: keyPEM}}
}
