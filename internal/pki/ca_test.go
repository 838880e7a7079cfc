package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSignRefusesBadCSR(t *testing.T) {
	ca := newCA(t, "cluster.local")
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	uriA, uriB := idA.URL(), idB.URL()
	csr := func(key any, tmpl x509.CertificateRequest) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	good := csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriA}})
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-3] ^= 0xff
	for _, tc := range []struct {
		name, want string
		der        []byte
	}{
		{"rsa key", "key is RSA, want ecdsa p-256", csr(rsaKey, x509.CertificateRequest{URIs: []*url.URL{uriA}})},
		{"p-384 key", "key is ecdsa P-384, want ecdsa p-256", csr(p384, x509.CertificateRequest{URIs: []*url.URL{uriA}})},
		{"extra dns san", `has dns sans ["a.example"]`, csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriA}, DNSNames: []string{"a.example"}})},
		{"ip san", "has ip sans", csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriA}, IPAddresses: []net.IP{net.IPv4(198, 18, 0, 1)}})},
		{"email san", "has email sans", csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriA}, EmailAddresses: []string{"a@example.com"}})},
		{"two uris", "has 2 uri sans, want exactly 1", csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriA, uriB}})},
		{"no uri", "has 0 uri sans", csr(p256, x509.CertificateRequest{})},
		{"id mismatch", "uri san " + idB.String() + ", want " + idA.String(), csr(p256, x509.CertificateRequest{URIs: []*url.URL{uriB}})},
		{"bad signature", "signature", badSig},
		{"garbage", "parse", []byte("not a csr")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Sign(context.Background(), tc.der, idA, time.Hour)
			if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign error %v, want ErrBadCSR containing %q", err, tc.want)
			}
		})
	}
	if _, err := ca.Sign(context.Background(), good, idA, time.Hour); err != nil {
		t.Fatalf("good csr refused: %v", err)
	}
}

func TestSignIssuesWorkloadCert(t *testing.T) {
	ca := newCA(t, "cluster.local")
	key, _ := NewKey()
	der, err := NewCSR(key, idA)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(context.Background(), der, idA, 100*time.Hour) // longer than the CA
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if !leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("notAfter %s, want capped at the CA's %s", leaf.NotAfter, ca.Certificate().NotAfter)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 2 || leaf.IsCA {
		t.Errorf("key usage %v ext %v ca %v", leaf.KeyUsage, leaf.ExtKeyUsage, leaf.IsCA)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() || len(leaf.DNSNames) != 0 {
		t.Errorf("sans uris %v dns %v", leaf.URIs, leaf.DNSNames)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Bundle(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify: %v", err)
	}
	other, _ := NewCSR(key, idA)
	if _, err := newCA(t, "other.domain").Sign(context.Background(), other, idA, time.Hour); err == nil || !strings.Contains(err.Error(), `trust domain "cluster.local", ca serves "other.domain"`) {
		t.Errorf("foreign trust domain: err %v", err)
	}
}

func TestLoadLocalCA(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := GenerateCA("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(cp, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadLocalCA(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	if ca.trustDomain != "cluster.local" || !ca.Certificate().IsCA {
		t.Errorf("trust domain %q", ca.trustDomain)
	}
	if _, err := LoadLocalCA(cp, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file accepted")
	}
}

func FuzzCheckCSR(f *testing.F) {
	key, _ := NewKey()
	good, _ := NewCSR(key, idA)
	f.Add(good)
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := CheckCSR(der, idA)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil || pub.Curve != elliptic.P256() || len(csr.URIs) != 1 || csr.URIs[0].String() != idA.String() || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted a csr it should refuse: %+v", csr)
		}
	})
}
