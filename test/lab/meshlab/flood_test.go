package meshlab

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// startHandshakeServer serves TLS 1.3 with client certificates required,
// as ztunnel's HBONE listener does: each handshake is bounded by timeout,
// after which the connection is closed. It returns the address.
func startHandshakeServer(t *testing.T, timeout time.Duration) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, ClientAuth: tls.RequireAnyClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				_ = tls.Server(c, cfg).HandshakeContext(ctx)
			})
		}
	})
	return ln.Addr().String()
}

func runFlood(t *testing.T, args ...string) (FloodResult, map[string]FloodClass, []byte) {
	t.Helper()
	var out bytes.Buffer
	if err := Run(context.Background(), append([]string{"app", "flood"}, args...), &out); err != nil {
		t.Fatalf("flood: %v (%s)", err, out.String())
	}
	var res FloodResult
	if err := json.Unmarshal(lastJSONLine(out.Bytes()), &res); err != nil {
		t.Fatalf("decode %q: %v", out.String(), err)
	}
	byKind := map[string]FloodClass{}
	for _, c := range res.Classes {
		byKind[c.Kind] = c
	}
	return res, byKind, out.Bytes()
}

func lastJSONLine(out []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return lines[len(lines)-1]
}

// TestFloodAgainstHandshakeTimeout: a TLS server that bounds handshakes
// closes every half-open connection at its timeout, not before, and the
// flood exits then rather than at the end of the hold; only the whole
// ClientHello gets an answer (it is real), and garbage is closed at once.
func TestFloodAgainstHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := startHandshakeServer(t, timeout)
	res, kinds, out := runFlood(t, "--to", addr, "--halfopen", "9", "--garbage", "6", "--hold", "20s", "--progress")
	if res.Seconds > 10 {
		t.Errorf("flood ran %.1fs: it should end once the server closed everything", res.Seconds)
	}
	var p FloodProgress
	if err := json.Unmarshal(bytes.SplitN(out, []byte("\n"), 2)[0], &p); err != nil || p.Dialed != 15 || p.Connected != 15 {
		t.Errorf("progress line %+v (%v), want 15 dialed and connected", p, err)
	}
	for _, mode := range halfOpenModes {
		c := kinds["halfopen-"+mode]
		if c.Conns != 3 || c.Connected != 3 || c.PeerClosed != 3 || c.Held != 0 {
			t.Errorf("%s: %+v, want 3 connected and closed by the server", c.Kind, c)
		}
		if c.EndMinMS < float64(timeout.Milliseconds())*0.8 {
			t.Errorf("%s: closed after %.0fms, before the server's %v handshake timeout", c.Kind, c.EndMinMS, timeout)
		}
		if answered := c.BytesBack > 0; answered != (mode == "hello") {
			t.Errorf("%s: %d bytes back; only a whole ClientHello gets an answer", c.Kind, c.BytesBack)
		}
	}
	for _, kind := range garbageKinds {
		c := kinds["garbage-"+kind]
		if c.Conns != 2 || c.PeerClosed != 2 || c.EndMaxMS >= float64(timeout.Milliseconds()) {
			t.Errorf("%s: %+v, want 2 closed by the server at once", c.Kind, c)
		}
	}
}

// TestFloodHeldByEcho: an echo server keeps everything open, so the flood
// holds the half-open connections to the end of the hold, each garbage
// connection for its wait, and gets every byte back.
func TestFloodHeldByEcho(t *testing.T) {
	addr := startEcho(t)
	hello, err := clientHello()
	if err != nil {
		t.Fatal(err)
	}
	if len(hello) < 100 || hello[0] != 0x16 || hello[5] != 0x01 {
		t.Fatalf("client hello % x... is not a handshake record holding a ClientHello", hello[:min(len(hello), 6)])
	}
	start := time.Now()
	res, kinds, _ := runFlood(t, "--to", addr, "--halfopen", "3", "--garbage", "3", "--hold", "500ms", "--garbage-wait", "100ms")
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("flood ended after %v, before its hold", took)
	}
	want := map[string]int64{
		"halfopen-none": 0, "halfopen-partial": int64(len(hello) / 2), "halfopen-hello": int64(len(hello)),
		"garbage-random": 4096, "garbage-http1": int64(len(garbageBytes("http1"))), "garbage-h2": int64(len(garbageBytes("h2"))),
	}
	if len(res.Classes) != len(want) {
		t.Errorf("classes %+v, want %d", res.Classes, len(want))
	}
	for kind, back := range want {
		c := kinds[kind]
		if c.Conns != 1 || c.Connected != 1 || c.Held != 1 || c.PeerClosed != 0 || c.BytesBack != back {
			t.Errorf("%s: %+v, want 1 held with %d bytes back", kind, c, back)
		}
	}
}

// TestFloodDialErrors: nothing listens, every dial fails and is grouped.
func TestFloodDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, kinds, _ := runFlood(t, "--to", addr, "--halfopen", "2", "--hold", "1s")
	c := kinds["halfopen-none"]
	if c.Conns != 1 || c.Connected != 0 || len(c.DialErrors) != 1 || !strings.Contains(c.DialErrors[0].Error, "refused") {
		t.Errorf("halfopen-none: %+v, want one refused dial", c)
	}
}

func TestFloodUsage(t *testing.T) {
	for _, args := range [][]string{{"app", "flood"}, {"app", "flood", "--to", "x:1"}, {"app", "flood", "--to", "x:1", "--garbage", "1", "--hold", "0s"}} {
		if err := Run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("Run(%q): no error", args)
		}
	}
}
