package e2e

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestHBONERefusesBadPeers: the HBONE listener refuses plaintext, a client
// certificate from a foreign CA, an expired certificate and a valid
// certificate presented from an address its identity does not own; each is
// logged clearly, and a long-lived connection between other pods keeps
// flowing meanwhile. Over IPv4 and IPv6.
func TestHBONERefusesBadPeers(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	c := addPod(t, l, "c", 1, true)
	d := addPod(t, l, "d", 1, false)
	waitV4 := startStream(t, l, a, addr(b.IPv4(), echoPort), 8*time.Second)
	waitV6 := startStream(t, l, a, addr(b.IPv6(), echoPort), 8*time.Second)

	caCert, caKey := labCA(t, l)
	now := time.Now()
	for _, fam := range []struct {
		name string
		ip   func(*lab.Pod) netip.Addr
	}{{"ipv4", (*lab.Pod).IPv4}, {"ipv6", (*lab.Pod).IPv6}} {
		hbone := func(p *lab.Pod) netip.AddrPort { return addr(fam.ip(p), 15008) }
		authority := addr(fam.ip(b), echoPort).String()
		t.Run(fam.name+"/plaintext", func(t *testing.T) {
			conn := dialFrom(t, d, hbone(b))
			fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
			expectClosed(t, conn)
			waitLog(t, l, 2, "inbound hbone handshake failed", `"reason":"not_tls"`, fam.ip(d).String())
		})
		t.Run(fam.name+"/foreign CA", func(t *testing.T) {
			fCert, fKey := foreignCA(t)
			cert := clientCert(t, fCert, fKey, "a", now.Add(-time.Minute), now.Add(time.Hour))
			if st, err := hboneConnect(dialFrom(t, a, hbone(b)), &cert, authority); err == nil {
				t.Fatalf("foreign CA accepted: status %d", st)
			}
			waitLog(t, l, 2, "inbound hbone handshake failed", `"reason":"unknown_authority"`, fam.ip(a).String())
		})
		t.Run(fam.name+"/expired", func(t *testing.T) {
			cert := clientCert(t, caCert, caKey, "a", now.Add(-2*time.Hour), now.Add(-time.Hour))
			if st, err := hboneConnect(dialFrom(t, a, hbone(b)), &cert, authority); err == nil {
				t.Fatalf("expired certificate accepted: status %d", st)
			}
			waitLog(t, l, 2, "inbound hbone handshake failed", `"reason":"expired"`, fam.ip(a).String())
		})
		t.Run(fam.name+"/spoofed identity", func(t *testing.T) {
			// A valid certificate of c, presented from a's address.
			cert := clientCert(t, caCert, caKey, "c", now.Add(-time.Minute), now.Add(time.Hour))
			if st, err := hboneConnect(dialFrom(t, a, hbone(b)), &cert, authority); err == nil {
				t.Fatalf("c's certificate accepted from a's address: status %d", st)
			}
			waitLog(t, l, 2, `"reason":"spoofed_identity"`, "does not own source address "+fam.ip(a).String(), spiffeOf("c"))
		})
		t.Run(fam.name+"/own certificate works", func(t *testing.T) {
			// Control: the same client with a's own valid certificate gets in,
			// so the refusals above are about the certificates.
			cert := clientCert(t, caCert, caKey, "a", now.Add(-time.Minute), now.Add(time.Hour))
			st, err := hboneConnect(dialFrom(t, a, hbone(b)), &cert, authority)
			if err != nil || st != 200 {
				t.Fatalf("a's valid certificate: status %d, err %v; want 200", st, err)
			}
		})
	}
	_ = c
	waitV4()
	waitV6()
}

// TestMalformedInput: garbage on 15001, 15006 and 15008, truncated HTTP/2
// and CONNECTs with bad authorities get a clear error and disturb nobody
// else.
func TestMalformedInput(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	d := addPod(t, l, "d", 1, false)
	wait := startStream(t, l, a, addr(b.IPv4(), echoPort), 8*time.Second)
	caCert, caKey := labCA(t, l)
	now := time.Now()
	aCert := clientCert(t, caCert, caKey, "a", now.Add(-time.Minute), now.Add(time.Hour))
	garbage := make([]byte, 4096)
	rand.Read(garbage)

	t.Run("random bytes on 15001", func(t *testing.T) {
		// Straight to the outbound listener: there is no original destination.
		conn := dialFrom(t, a, netip.MustParseAddrPort("127.0.0.1:15001"))
		conn.Write(garbage)
		expectClosed(t, conn)
		waitLog(t, l, 1, "outbound connection without original destination")
	})
	t.Run("random bytes on 15008", func(t *testing.T) {
		conn := dialFrom(t, d, addr(b.IPv4(), 15008))
		conn.Write(garbage)
		expectClosed(t, conn)
		waitLog(t, l, 2, "inbound hbone handshake failed", b.IPv4().String()+":15008")
	})
	t.Run("connection to the plaintext listener itself", func(t *testing.T) {
		// sk_lookup steers every port to 15006; a connection addressed to
		// a mesh port must be refused, not delivered back into ztunnel.
		conn := dialFrom(t, d, addr(b.IPv4(), 15006))
		conn.Write(garbage)
		expectClosed(t, conn)
	})
	t.Run("truncated HTTP/2 after TLS", func(t *testing.T) {
		conn := dialFrom(t, a, addr(b.IPv4(), 15008))
		tc := tlsClient(conn, &aCert)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		tc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM")) // the preface, cut short
		tc.Close()
		waitLog(t, l, 2, "hbone connection closed without any CONNECT", a.IPv4().String(), spiffeOf("a"))
	})
	for _, bad := range []struct {
		authority string
		want      int
	}{
		{"not-an-ip:8080", 400},
		{b.IPv4().String() + ":0", 400},
		{b.IPv4().String() + ":99999", 400},
		{a.IPv4().String() + ":8080", 401},  // another pod's address
		{b.IPv4().String() + ":15008", 401}, // a mesh port
	} {
		t.Run("CONNECT "+bad.authority, func(t *testing.T) {
			st, err := hboneConnect(dialFrom(t, a, addr(b.IPv4(), 15008)), &aCert, bad.authority)
			if err != nil || st != bad.want {
				t.Errorf("status %d, err %v; want %d", st, err, bad.want)
			}
		})
	}
	// After all that, new connections still work and the stream never broke.
	send(t, l, a, addr(b.IPv4(), echoPort), "still-serving")
	wait()
}
