// Package testutil holds helpers shared by the tests of several packages:
// the root check that fails rather than skips under CI, throwaway network
// namespaces, and a log sink that is printed when a test fails.
package testutil

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// RequireRoot skips the test when not root, or fails it when CI=true: in CI
// a privileged test must never pass by skipping. why says what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs root (CI=true, so this is a failure): %s", why)
	}
	t.Skipf("needs root: %s", why)
}

// NewNetns creates a network namespace with lo up that lives until the
// test ends (or until the returned file and every copy of it is closed).
func NewNetns(t testing.TB) *os.File {
	t.Helper()
	RequireRoot(t, "creates network namespaces")
	f, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	err = netns.Do(int(f.Fd()), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("bring lo up in new netns: %v", err)
	}
	return f
}

// AddrOnLo adds ip (as a host address) to lo in ns, a namespace of
// NewNetns: an address of the namespace that is not loopback.
func AddrOnLo(t testing.TB, ns *os.File, ip netip.Addr) {
	t.Helper()
	err := netns.Do(int(ns.Fd()), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}})
	})
	if err != nil {
		t.Fatalf("add %s to lo: %v", ip, err)
	}
}

// LogBuffer is a goroutine-safe log sink a test can search.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NewLog returns a debug-level logger into a buffer that is printed when
// the test fails.
func NewLog(t testing.TB) (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", b)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// TLogger returns a logger at level whose lines go to t.Log, so they show
// with -v or when the test fails.
func TLogger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
