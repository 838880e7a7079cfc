package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

var (
	idA = spiffe.New("cluster.local", "ns1", "a")
	idB = spiffe.New("cluster.local", "ns2", "b")
	idC = spiffe.New("cluster.local", "ns3", "c")
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCA(t *testing.T, td string) *pki.LocalCA {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newManager returns a manager signed by ca holding certificates for ids.
func newManager(t *testing.T, ca *pki.LocalCA, ids ...spiffe.ID) *Manager {
	t.Helper()
	m := NewManager(ManagerOptions{Signer: ca, Bundle: ca.Bundle(), Logger: quietLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		if err := m.Ensure(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// handshake runs a TLS handshake over net.Pipe and returns both sides' errors.
func handshake(t *testing.T, server, client *tls.Config) (srvState tls.ConnectionState, srvErr, cliErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	srv := tls.Server(a, server)
	go func() {
		defer close(done)
		srvErr = srv.HandshakeContext(ctx)
		if srvErr != nil {
			a.Close() // unblock the client
		}
		srvState = srv.ConnectionState()
	}()
	cli := tls.Client(b, client)
	cliErr = cli.HandshakeContext(ctx)
	if cliErr == nil {
		// TLS 1.3 clients finish before the server checked their cert:
		// read once so a server-side refusal reaches us as an alert.
		cli.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var buf [1]byte
		if _, err := cli.Read(buf[:]); err != nil && !isTimeout(err) {
			cliErr = err
		}
	} else {
		b.Close()
	}
	<-done
	return srvState, srvErr, cliErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// signerFunc adapts a function to Signer.
type signerFunc func(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error)

func (f signerFunc) Sign(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error) {
	return f(ctx, csrDER, id, lifetime)
}

// countingSigner counts calls and fails them after failAfter successes (if > 0).
type countingSigner struct {
	ca        *pki.LocalCA
	calls     atomic.Int32
	failAfter int32
}

func (s *countingSigner) Sign(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error) {
	n := s.calls.Add(1)
	if s.failAfter > 0 && n > s.failAfter {
		return nil, errors.New("ca unavailable")
	}
	return s.ca.Sign(ctx, csrDER, id, lifetime)
}
