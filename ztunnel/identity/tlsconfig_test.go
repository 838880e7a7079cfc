package identity

import (
	"crypto"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

func wantErr(t *testing.T, side string, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: handshake succeeded, want error containing %q", side, substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("%s: error %q, want it to contain %q", side, err, substr)
	}
}

func TestHandshakeGood(t *testing.T) {
	ca := newCA(t, "cluster.local")
	m := newManager(t, ca, idA, idB)
	var authorized spiffe.ID
	srv := m.ServerTLSConfig(idB, func(peer spiffe.ID, _ tls.ConnectionState) error {
		authorized = peer
		return nil
	})
	st, srvErr, cliErr := handshake(t, srv, m.ClientTLSConfig(idA, idB))
	if srvErr != nil || cliErr != nil {
		t.Fatalf("server err %v, client err %v", srvErr, cliErr)
	}
	if authorized != idA {
		t.Errorf("authorize saw peer %s, want %s", authorized, idA)
	}
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "h2" {
		t.Errorf("version %x alpn %q, want tls 1.3 and h2", st.Version, st.NegotiatedProtocol)
	}
	if got, _ := PeerID(st); got != idA {
		t.Errorf("PeerID = %s, want %s", got, idA)
	}
}

func TestForeignCARefused(t *testing.T) {
	ca := newCA(t, "cluster.local")
	m := newManager(t, ca, idB)
	foreign := newManager(t, newCA(t, "cluster.local"), idA)
	foreign.SetBundle(ca.Bundle()) // so only the server side refuses
	_, srvErr, _ := handshake(t, m.ServerTLSConfig(idB, nil), foreign.ClientTLSConfig(idA, idB))
	wantErr(t, "server", srvErr, "peer certificate signed by unknown authority")
	_, _, cliErr := handshake(t, foreign.ServerTLSConfig(idA, nil), newManager(t, ca, idB).ClientTLSConfig(idB, idA))
	wantErr(t, "client", cliErr, "peer certificate signed by unknown authority")
}

func TestExpiredRefused(t *testing.T) {
	certPEM, keyPEM, err := pki.GenerateCA("cluster.local", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caPair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, ca, idB)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(-time.Hour).Truncate(time.Second)
	leaf, err := pki.IssueCertificate(ca.Certificate(), caPair.PrivateKey.(crypto.Signer), idA, &key.PublicKey, notAfter.Add(-time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	cli := m.ClientTLSConfig(idA, idB)
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
	}
	_, srvErr, _ := handshake(t, m.ServerTLSConfig(idB, nil), cli)
	wantErr(t, "server", srvErr, "peer certificate expired at "+notAfter.UTC().Format(time.RFC3339))
}

func TestClientClockPastServerExpiry(t *testing.T) {
	ca := newCA(t, "cluster.local")
	m := newManager(t, ca, idA, idB)
	late := NewManager(ManagerOptions{Bundle: ca.Bundle(), Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	_, _, cliErr := handshake(t, m.ServerTLSConfig(idB, nil), late.ClientTLSConfig(idA, idB))
	leaf, _ := m.Certificate(idB)
	wantErr(t, "client", cliErr, "peer certificate expired at "+leaf.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

func TestWrongPeerRefused(t *testing.T) {
	m := newManager(t, newCA(t, "cluster.local"), idA, idB)
	_, _, cliErr := handshake(t, m.ServerTLSConfig(idB, nil), m.ClientTLSConfig(idA, idC))
	wantErr(t, "client", cliErr, "peer id "+idB.String()+", want "+idC.String())

	deny := func(peer spiffe.ID, _ tls.ConnectionState) error { return errors.New("not on the list") }
	_, srvErr, _ := handshake(t, m.ServerTLSConfig(idB, deny), m.ClientTLSConfig(idA, idB))
	wantErr(t, "server", srvErr, "peer "+idA.String()+" not authorized: not on the list")
}

func TestNoClientCertRefused(t *testing.T) {
	m := newManager(t, newCA(t, "cluster.local"), idB)
	cli := m.ClientTLSConfig(idA, idB)
	cli.GetClientCertificate = nil
	_, srvErr, _ := handshake(t, m.ServerTLSConfig(idB, nil), cli)
	wantErr(t, "server", srvErr, "client didn't provide a certificate")
}

func TestTLS12Refused(t *testing.T) {
	m := newManager(t, newCA(t, "cluster.local"), idA, idB)
	cli := m.ClientTLSConfig(idA, idB)
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	_, srvErr, cliErr := handshake(t, m.ServerTLSConfig(idB, nil), cli)
	wantErr(t, "server", srvErr, "client offered only unsupported versions")
	wantErr(t, "client", cliErr, "protocol version")
}

func TestBundleRotation(t *testing.T) {
	m := newManager(t, newCA(t, "cluster.local"), idA, idB)
	m.SetBundle(newCA(t, "cluster.local").Bundle())
	_, _, cliErr := handshake(t, m.ServerTLSConfig(idB, nil), m.ClientTLSConfig(idA, idB))
	wantErr(t, "client", cliErr, "peer certificate signed by unknown authority")
}
