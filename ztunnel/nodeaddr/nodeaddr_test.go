package nodeaddr

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/agentmesh/agentmesh/internal/testutil"
)

// TestUsable: only addresses that can source a connection to a pod count.
func TestUsable(t *testing.T) {
	for s, want := range map[string]bool{
		"198.19.1.1": true, "10.0.0.7": true, "169.254.7.127": true, "fd00:19:1::1": true, "2001:db8::1": true,
		"127.0.0.1": false, "::1": false, "fe80::1": false, "0.0.0.0": false, "::": false, "224.0.0.1": false, "ff02::1": false,
	} {
		if got := usable(netip.MustParseAddr(s)); got != want {
			t.Errorf("usable(%s) = %v, want %v", s, got, want)
		}
	}
}

// TestFollowsChanges: in a fresh namespace, addresses added to and removed
// from a link show up in the set as the kernel announces them; loopback
// and link-local addresses never do; Run ends with its goroutines.
func TestFollowsChanges(t *testing.T) {
	nsf := testutil.NewNetns(t)
	base := runtime.NumGoroutine()
	s, err := New(Options{Netns: nsf, Resync: time.Hour, Logger: testutil.TLogger(t, -4)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Addrs(); len(got) != 0 {
		t.Fatalf("fresh namespace: %v, want no address (loopback does not count)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not end 5s after its context")
		}
	}
	defer stop()

	h := handle(t, nsf)
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "node0"}, PeerName: "node1"}
	if err := h.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("198.19.1.1/32"), netip.MustParsePrefix("fd00:19:1::1/128")
	for _, p := range []netip.Prefix{v4, v6} {
		if err := h.AddrAdd(link, addr(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both addresses listed", func() bool { return s.Contains(v4.Addr()) && s.Contains(v6.Addr()) })
	if !s.Contains(netip.MustParseAddr("::ffff:198.19.1.1")) {
		t.Error("IPv4-mapped form of a node address not recognised")
	}
	for _, a := range s.Addrs() {
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			t.Errorf("listed %s", a)
		}
	}
	if err := h.AddrDel(link, addr(v4)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "removed address gone", func() bool { return !s.Contains(v4.Addr()) && s.Contains(v6.Addr()) })
	stop()
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

func handle(t *testing.T, nsf *os.File) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(nsf.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func addr(p netip.Prefix) *netlink.Addr {
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		panic(err)
	}
	a.Flags = 0x80 // IFA_F_NODAD: the IPv6 address is usable at once
	return a
}

// waitFor polls cond (each change is announced at once; the bound is
// generous for a loaded machine).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
