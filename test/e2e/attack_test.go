//lint:file-ignore SA1019 the attacker speaks raw HTTP/2 through x/net/http2, as ztunnel/hbone does.

package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/test/lab"
)

// dialFrom opens a TCP connection from inside pod p's netns. The test
// process is not in the pod's cgroup, so the capture programs do not touch
// it: this is a raw client, as an attacker inside the pod would have.
func dialFrom(t *testing.T, p *lab.Pod, to netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := netns.DoPath(p.NetnsPath(), func() error {
		var err error
		c, err = net.DialTimeout("tcp", to.String(), 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, p.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// labCA loads the lab's CA.
func labCA(t *testing.T, l *lab.Lab) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(l.StateDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(l.StateDir(), "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return parseCA(t, certPEM, keyPEM)
}

// foreignCA makes a CA the mesh does not trust, for the same trust domain.
func foreignCA(t *testing.T) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return parseCA(t, certPEM, keyPEM)
}

func parseCA(t *testing.T, certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("ca files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key.(crypto.Signer)
}

// clientCert issues a certificate for the agents/<sa> identity valid from
// notBefore to notAfter.
func clientCert(t *testing.T, caCert *x509.Certificate, caKey crypto.Signer, sa string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.IssueCertificate(caCert, caKey, spiffe.New("cluster.local", "agents", sa), &key.PublicKey, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// hboneConnect performs a full HBONE exchange over c: TLS 1.3 with cert,
// then an HTTP/2 CONNECT to authority. It returns the response status, or
// the error that stopped it.
func hboneConnect(c net.Conn, cert *tls.Certificate, authority string) (int, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return 0, fmt.Errorf("handshake: %w", err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		return 0, fmt.Errorf("http2: %w", err)
	}
	defer cc.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodConnect, "https://"+authority, pr)
	if err != nil {
		return 0, err
	}
	req.Host = authority
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// expectClosed reads from c until it is closed by the peer, failing if
// anything but a TLS alert or nothing comes back within 5s.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	data, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after 5s (read %q)", data)
	}
	if len(data) > 0 && data[0] != 0x15 { // only a TLS alert record may come back
		t.Errorf("got %q back, want the connection closed", data)
	}
}

// tlsClient wraps c in a TLS 1.3 h2 client presenting cert.
func tlsClient(c net.Conn, cert *tls.Certificate) *tls.Conn {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{*cert}}
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	return tc
}
