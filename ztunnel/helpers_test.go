package ztunnel

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// requireRoot skips without root, or fails when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("test needs root (network namespaces, SO_MARK) and CI=true")
	}
	t.Skip("test needs root (network namespaces, SO_MARK)")
}

// newNetns makes a fresh network namespace with lo up; it is removed when
// the test ends (closing the last fd).
func newNetns(t *testing.T) *os.File {
	t.Helper()
	requireRoot(t)
	ch := make(chan any, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- err
			return // thread exits locked: discarded
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("unshare: %w", err)
			return
		}
		f, ferr := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		if ferr != nil {
			ch <- ferr
			return
		}
		ch <- f
	}()
	switch v := (<-ch).(type) {
	case error:
		t.Fatalf("new netns: %v", v)
	case *os.File:
		t.Cleanup(func() { v.Close() })
		h := nsHandle(t, v)
		lo, err := h.LinkByName("lo")
		if err != nil {
			t.Fatalf("lo: %v", err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			t.Fatalf("lo up: %v", err)
		}
		return v
	}
	panic("unreachable")
}

func nsHandle(t *testing.T, ns *os.File) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(ns.Fd())))
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// linkNetns joins a and b with a veth pair and gives each end its prefixes.
func linkNetns(t *testing.T, a, b *os.File, name string, aAddrs, bAddrs []string) {
	t.Helper()
	ha, hb := nsHandle(t, a), nsHandle(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "a"}, PeerName: name + "b", PeerNamespace: netlink.NsFd(int(b.Fd()))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	setup := func(h *netlink.Handle, ifname string, addrs []string) {
		l, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatalf("link %s: %v", ifname, err)
		}
		for _, s := range addrs {
			pfx, err := netlink.ParseAddr(s)
			if err != nil {
				t.Fatal(err)
			}
			pfx.Flags = unix.IFA_F_NODAD
			if err := h.AddrAdd(l, pfx); err != nil {
				t.Fatalf("addr %s on %s: %v", s, ifname, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("up %s: %v", ifname, err)
		}
	}
	setup(ha, name+"a", aAddrs)
	setup(hb, name+"b", bAddrs)
	// Carrier comes up asynchronously (linkwatch, up to 1s); a SYN sent
	// before would wait for a retransmit.
	for _, e := range []struct {
		h    *netlink.Handle
		name string
	}{{ha, name + "a"}, {hb, name + "b"}} {
		deadline := time.Now().Add(3 * time.Second)
		for {
			l, err := e.h.LinkByName(e.name)
			if err == nil && l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("link %s not up", e.name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// listenIn opens a TCP listener inside ns.
func listenIn(t *testing.T, ns *os.File, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := netns.Do(int(ns.Fd()), func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialIn connects from inside ns.
func dialIn(t *testing.T, ns *os.File, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	err := netns.Do(int(ns.Fd()), func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoApp answers every connection with "echo:" + everything it read, after
// the client half-closed, and records the peers it saw.
type echoApp struct {
	mu    sync.Mutex
	peers []netip.AddrPort
	wg    sync.WaitGroup
}

func serveEcho(t *testing.T, ln net.Listener) *echoApp {
	a := &echoApp{}
	a.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.peers = append(a.peers, netaddr.AddrPort(c.RemoteAddr()))
			a.mu.Unlock()
			a.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var buf bytes.Buffer
				buf.ReadFrom(c)
				c.Write(append([]byte("echo:"), buf.Bytes()...))
			})
		}
	})
	t.Cleanup(func() { ln.Close(); a.wg.Wait() })
	return a
}

func (a *echoApp) lastPeer() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.peers) == 0 {
		return netip.AddrPort{}
	}
	return a.peers[len(a.peers)-1]
}

// roundTrip writes msg, half-closes and reads the reply until EOF.
func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(c)
	return buf.String(), err
}

// fakeOrigDst answers every lookup with dst (or err) and records the keys.
type fakeOrigDst struct {
	mu      sync.Mutex
	dst     netip.AddrPort
	err     error
	panics  bool
	lookups []origKey
}

type origKey struct {
	cookie   uint64
	src, dst netip.AddrPort
}

func (f *fakeOrigDst) set(dst netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dst, f.err, f.panics = dst, nil, false
}

func (f *fakeOrigDst) Lookup(cookie uint64, src, dst netip.AddrPort) (netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, origKey{cookie, src, dst})
	if f.panics {
		panic("fake orig dst panics")
	}
	return f.dst, f.err
}

func (f *fakeOrigDst) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lookups)
}

func (f *fakeOrigDst) last() origKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[len(f.lookups)-1]
}

// fakeListeners records SOCKHASH entries.
type fakeListeners struct {
	mu      sync.Mutex
	entries map[string]bool
}

func (f *fakeListeners) Put(ip netip.Addr, port uint16, _ syscall.Conn) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries == nil {
		f.entries = map[string]bool{}
	}
	f.entries[netip.AddrPortFrom(ip, port).String()] = true
	return nil
}

func (f *fakeListeners) Delete(ip netip.Addr, port uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, netip.AddrPortFrom(ip, port).String())
	return nil
}

func (f *fakeListeners) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.entries {
		out = append(out, k)
	}
	return sortStrings(out)
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// logBuf collects JSON log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logBuf) lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// wait returns the first line matching all of want (values compared as
// fmt %v), waiting up to 5s.
func (l *logBuf) wait(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range l.lines() {
			if matches(m, want) {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line with %v; log:\n%s", want, l.String())
	return nil
}

// count counts the lines matching want (as wait matches them).
func (l *logBuf) count(want map[string]any) int {
	n := 0
	for _, m := range l.lines() {
		if matches(m, want) {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func matches(m, want map[string]any) bool {
	for k, v := range want {
		got, ok := m[k]
		if !ok {
			return false
		}
		if s, isStr := v.(string); isStr && strings.HasPrefix(s, "~") {
			if !strings.Contains(fmt.Sprint(got), s[1:]) {
				return false
			}
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

// newCA makes a local CA for trust domain td.
func newCA(t testing.TB, td string) *pki.LocalCA {
	ca, _ := newCAPair(t, td)
	return ca
}

// newCAPair makes a local CA and returns its key pair too.
func newCAPair(t testing.TB, td string) (*pki.LocalCA, tls.Certificate) {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca, pair
}

// expiredClientConfig is a TLS client config presenting a certificate for
// id, signed by caPair, that expired an hour ago.
func expiredClientConfig(t *testing.T, caPair tls.Certificate, id spiffe.ID) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	leaf, err := pki.IssueCertificate(caPair.Leaf, caPair.PrivateKey.(crypto.Signer), id, &key.PublicKey, now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{identity.ALPN}, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}},
	}
}

// newManager returns a running identity manager signing with ca.
func newManager(t testing.TB, ca *pki.LocalCA, now func() time.Time) *identity.Manager {
	t.Helper()
	m := identity.NewManager(identity.ManagerOptions{Signer: ca, Bundle: ca.Bundle(), Lifetime: time.Hour, Now: now, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}
