package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// runManager runs m until the test ends.
func runManager(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serial(t *testing.T, m *Manager) string {
	t.Helper()
	c, err := m.Certificate(idA)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Text(16)
}

func TestRenewalKeepsLiveConnection(t *testing.T) {
	ca := newCA(t, "cluster.local")
	m := NewManager(ManagerOptions{Signer: ca, Bundle: ca.Bundle(), Lifetime: 2 * time.Second, Logger: quietLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Ensure(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, idB); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.ServerTLSConfig(idA, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	// Close the listener before waiting for the echo server, also when a
	// Fatal ends the test early (two separate defers would wait first and
	// turn any failure into a hang until the test binary's timeout).
	defer func() {
		ln.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() { // echo server
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), m.ClientTLSConfig(idB, idA))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	echo := func(c *tls.Conn, msg string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		buf := make([]byte, len(msg))
		if _, err := c.Read(buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
	old := dial()
	defer old.Close()
	echo(old, "before")
	// The certificate old's handshake saw: the first one, or already a
	// renewal when the machine was slow to get here (lifetime 2s).
	oldCert := old.ConnectionState().PeerCertificates[0]
	first, firstExpiry := oldCert.SerialNumber.Text(16), oldCert.NotAfter
	waitFor(t, "renewal", 5*time.Second, func() bool { return serial(t, m) != first })
	echo(old, "after renewal")
	fresh := dial()
	defer fresh.Close()
	if got := fresh.ConnectionState().PeerCertificates[0].SerialNumber.Text(16); got == first {
		t.Errorf("new handshake still presents the old serial %s", got)
	}
	time.Sleep(time.Until(firstExpiry) + 100*time.Millisecond)
	echo(old, "after the first certificate expired")
	echo(fresh, "fresh")
	old.Close()
	fresh.Close()
	ln.Close()
}

func TestFailedRenewalKeepsCertUntilExpiry(t *testing.T) {
	s := &countingSigner{ca: newCA(t, "cluster.local"), failAfter: 1}
	m := NewManager(ManagerOptions{Signer: s, Lifetime: 2 * time.Second, Logger: quietLogger()})
	if err := m.Ensure(context.Background(), idA); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c, _ := m.Certificate(idA)
	waitFor(t, "failed renewal", 3*time.Second, func() bool { return m.Snapshot()[0].Failures > 0 })
	if got, err := m.Certificate(idA); err != nil || got != c {
		t.Fatalf("after failed renewal: cert changed or error %v", err)
	}
	waitFor(t, "expiry", 3*time.Second, func() bool { return time.Now().After(c.Leaf.NotAfter) })
	if _, err := m.Certificate(idA); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("after expiry: err %v, want expired", err)
	}
	if n := s.calls.Load(); n < 3 {
		t.Errorf("signer called %d times, want retries", n)
	}
}

func TestEnsureSharesFetchAndForget(t *testing.T) {
	s := &countingSigner{ca: newCA(t, "cluster.local")}
	m := NewManager(ManagerOptions{Signer: s, Logger: quietLogger()})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Ensure(context.Background(), idA); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := s.calls.Load(); n != 1 {
		t.Errorf("10 concurrent Ensure made %d signer calls, want 1", n)
	}
	snap := m.Snapshot()
	if len(snap) != 1 || snap[0].ID != idA || snap[0].Serial == "" || snap[0].AuthorityKeyID == "" {
		t.Fatalf("snapshot %+v", snap)
	}
	life := snap[0].NotAfter.Sub(snap[0].NotBefore)
	if r := snap[0].NextRenewal.Sub(snap[0].NotBefore); r > life/2 || r < life*45/100 {
		t.Errorf("renewal at %s of %s life, want about half", r, life)
	}
	m.Forget(idA)
	if _, err := m.Certificate(idA); err == nil || !strings.Contains(err.Error(), "not ensured") {
		t.Errorf("after Forget: err %v", err)
	}
}

func TestEnsureGivesUpWithContext(t *testing.T) {
	fail := signerFunc(func(context.Context, []byte, spiffe.ID, time.Duration) ([]*x509.Certificate, error) {
		return nil, errors.New("ca unavailable")
	})
	m := NewManager(ManagerOptions{Signer: fail, Logger: quietLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := m.Ensure(ctx, idA)
	if err == nil || !strings.Contains(err.Error(), "ensure "+idA.String()) {
		t.Fatalf("err %v", err)
	}
	if _, err := m.Certificate(idA); err == nil || !strings.Contains(err.Error(), "yet") {
		t.Errorf("Certificate err %v", err)
	}
}

func TestRunStopsRenewalInFlight(t *testing.T) {
	ca := newCA(t, "cluster.local")
	var calls atomic.Int32
	blocking := signerFunc(func(ctx context.Context, der []byte, id spiffe.ID, life time.Duration) ([]*x509.Certificate, error) {
		if calls.Add(1) == 1 {
			return ca.Sign(ctx, der, id, life)
		}
		<-ctx.Done() // a CA that never answers
		return nil, ctx.Err()
	})
	m := NewManager(ManagerOptions{Signer: blocking, Lifetime: time.Second, Logger: quietLogger()})
	if err := m.Ensure(context.Background(), idA); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	waitFor(t, "renewal to start", 3*time.Second, func() bool { return calls.Load() == 2 })
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return with a renewal in flight")
	}
	if _, err := m.Certificate(idA); err != nil {
		t.Errorf("certificate lost after a canceled renewal: %v", err)
	}
}
