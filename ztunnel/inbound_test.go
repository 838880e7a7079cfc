package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

var (
	idClient = spiffe.New(td, "agents", "client")
	idServer = spiffe.New(td, "agents", "server")
	idOther  = spiffe.New(td, "agents", "other")
)

// clientConfig is m's client config for local, without the check of the
// server (these tests are about the server's checks).
func clientConfig(t *testing.T, m *identity.Manager, local spiffe.ID) *tls.Config {
	t.Helper()
	if err := m.Ensure(context.Background(), local); err != nil {
		t.Fatal(err)
	}
	cfg := m.ClientTLSConfig(local, idServer)
	cfg.VerifyConnection = nil
	return cfg
}

// tlsFromA runs a TLS client from pod A's netns to B:15008 and returns the
// first error of handshake + read.
func tlsFromA(t *testing.T, e *env, cfg *tls.Config) error {
	t.Helper()
	c := dialIn(t, e.a, netip.AddrPortFrom(ipB, 15008).String())
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	// TLS 1.3: the server's verdict on our certificate arrives as an alert.
	_, err := tc.Read(make([]byte, 1))
	return err
}

func TestHBONEHandshakeFailures(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	foreign := newManager(t, newCA(t, td), nil)
	for _, tc := range []struct {
		name, reason, errPart string
		run                   func() error
	}{
		{"spoofed identity", "spoofed_identity", "peer " + idOther.String() + " does not own source address 198.18.1.1", func() error {
			return tlsFromA(t, e, clientConfig(t, e.certs, idOther))
		}},
		{"foreign ca", "unknown_authority", "unknown authority", func() error {
			return tlsFromA(t, e, clientConfig(t, foreign, idClient))
		}},
		{"expired", "expired", "expired", func() error {
			return tlsFromA(t, e, expiredClientConfig(t, e.caPair, idClient))
		}},
		{"plaintext", "not_tls", "", func() error {
			c := dialIn(t, e.a, "198.18.1.2:15008")
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := c.Read(make([]byte, 512))
			for err == nil {
				_, err = c.Read(make([]byte, 512))
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); err == nil {
				t.Fatal("connection accepted, want refused")
			}
			e.logs.wait(t, map[string]any{
				"msg": "inbound hbone handshake failed, connection closed", "reason": tc.reason,
				"src_addr": "~198.18.1.1:", "pod": "agents/server", "err": "~" + tc.errPart,
			})
			if got := testutil.ToFloat64(e.node.rec.M.HandshakeFailures.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("handshake failures{reason=%s} = %v, want 1", tc.reason, got)
			}
		})
	}
	// The listener keeps serving.
	e.orig.set(appB)
	if got, err := roundTrip(dialIn(t, e.a, "127.0.0.1:15001"), "still"); got != "echo:still" {
		t.Fatalf("after bad handshakes: round trip = %q, %v", got, err)
	}
}

// redirected is a conn whose local address is what sk_lookup preserves: the
// original destination.
type redirected struct {
	net.Conn
	local net.Addr
}

func (r redirected) LocalAddr() net.Addr { return r.local }

// TestInboundPlaintext: plaintext from A (a mesh pod's address) is
// delivered to B without a source workload (a mesh pod never sends
// plaintext: its address proves nothing), or refused for a mesh port or
// another pod's address.
func TestInboundPlaintext(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	pb := e.pod("uid-b")
	ln := listenIn(t, e.b, ":9999")
	for _, tc := range []struct {
		name, result string
		dst          netip.AddrPort
		reply        string
	}{
		{"delivered", "ok", appB, "echo:plain"},
		{"mesh port refused", "~mesh port", netip.AddrPortFrom(ipB, 15006), ""},
		// What reaches the pod's listener at its own address's outbound
		// port (the pod calling itself there) is not delivered to it again.
		{"outbound port refused", "~mesh port", netip.AddrPortFrom(ipB, 15001), ""},
		{"other pod refused", "~not an address of pod", appX, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialIn(t, e.a, "198.18.1.2:9999")
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			e.servePlaintext(pb, redirected{sc, net.TCPAddrFromAddrPort(tc.dst)})
			if got, _ := roundTrip(c, "plain"); got != tc.reply {
				t.Errorf("reply %q, want %q", got, tc.reply)
			}
			e.logs.wait(t, map[string]any{
				"msg": "access", "direction": "inbound", "protocol": "plaintext", "mtls": false,
				"src_addr": netaddr.AddrPort(c.LocalAddr()).String(), "src_workload": "",
				"dst_addr": tc.dst.String(), "dst_workload": "agents/server", "result": tc.result,
			})
		})
	}
}

func TestAuthorizePeer(t *testing.T) {
	idx := newIndex(testConfig(true))
	for _, tc := range []struct {
		peer    spiffe.ID
		src     netip.Addr
		wantErr string
	}{
		{idClient, ipA, ""},
		{idClient, ip6A, ""},
		{idClient, netip.MustParseAddr("::ffff:198.18.1.1"), ""},
		{idOther, ipA, "peer spiffe://cluster.local/ns/agents/sa/other does not own source address 198.18.1.1 (it belongs to agents/client"},
		{idClient, ipX, "does not own source address 198.18.2.2 (no workload has it)"},
		{spiffe.New("evil.example", "agents", "client"), ipA, "does not own"},
	} {
		err := authorize.Peer(idx, tc.peer, tc.src)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("authorize %s from %s: %v", tc.peer, tc.src, err)
		case tc.wantErr != "" && (err == nil || !contains(err.Error(), tc.wantErr)):
			t.Errorf("authorize %s from %s = %v, want %q", tc.peer, tc.src, err, tc.wantErr)
		case err != nil && authorize.HandshakeReason(err) != "spoofed_identity":
			t.Errorf("reason of %v = %s", err, authorize.HandshakeReason(err))
		}
	}
}

func TestHBONEBadAuthorityAndTruncatedHTTP2(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	pa := e.pod("uid-a")
	client := hbone.NewClient(hbone.ClientOptions{Logger: discard})
	defer client.Close()
	if err := e.certs.Ensure(context.Background(), idClient); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		authority netip.AddrPort
		code      int
	}{
		{"other pod's address", netip.AddrPortFrom(ipA, 8080), 401},
		{"mesh port", netip.AddrPortFrom(ipB, 15008), 401},
		{"nothing listening", netip.AddrPortFrom(ipB, 9), 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, hbone.Target{
				SrcID: idClient, DstID: idServer, SrcIP: ipA,
				HBONEAddr: netip.AddrPortFrom(ipB, 15008), Authority: tc.authority,
				TLS: e.certs.ClientTLSConfig(idClient, idServer),
				Dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
					return pa.net.Dial(ctx, addr)
				},
			})
			var se *hbone.StatusError
			if !errors.As(err, &se) || se.Code != tc.code {
				if c != nil {
					c.Close()
				}
				t.Fatalf("dial authority %s: %v, want status %d", tc.authority, err, tc.code)
			}
		})
	}
	e.logs.wait(t, map[string]any{"msg": "hbone stream refused", "authority": "198.18.1.1:8080", "err": "~not an address of pod agents/server"})

	// A verified peer that sends a truncated HTTP/2 preface: closed, and
	// the listener goes on.
	cfg := clientConfig(t, e.certs, idClient)
	c := dialIn(t, e.a, "198.18.1.2:15008")
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"))
	tc.CloseWrite()
	if _, err := io.Copy(io.Discard, tc); err != nil && !errors.Is(err, io.EOF) && !isTimeout(err) {
		t.Logf("read after truncated preface: %v", err)
	}
	e.orig.set(appB)
	if got, err := roundTrip(dialIn(t, e.a, "127.0.0.1:15001"), "ok?"); got != "echo:ok?" {
		t.Fatalf("after truncated HTTP/2: round trip = %q, %v", got, err)
	}
}
