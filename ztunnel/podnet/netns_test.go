package podnet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// TestOpenReusesTimeWait: opening a pod's netns turns on TIME_WAIT reuse
// there (and only there), so that deliveries from the pod's own address
// to its app do not run out of ports.
func TestOpenReusesTimeWait(t *testing.T) {
	ns := testutil.NewNetns(t)
	read := func(fd int) string {
		t.Helper()
		var v []byte
		if err := netns.Do(fd, func() error {
			var err error
			v, err = os.ReadFile(TimeWaitReuse)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(bytes.TrimSpace(v))
	}
	own, err := os.ReadFile(TimeWaitReuse)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(int(ns.Fd())); got != "2" {
		t.Fatalf("a new netns has %s=%s, want the default 2", TimeWaitReuse, got)
	}
	openPod(t, ns)
	if got := read(int(ns.Fd())); got != "1" {
		t.Errorf("after Open the pod's netns has %s=%s, want 1", TimeWaitReuse, got)
	}
	if now, _ := os.ReadFile(TimeWaitReuse); !bytes.Equal(now, own) {
		t.Errorf("ztunnel's own netns changed to %q", now)
	}
}

// TestOpenProcSysNet: with ProcSysNet, Open sets the pod's sysctls
// through that directory, as the chart's ztunnel does through its mount of
// the node's /proc/sys/net (its own /proc/sys is read-only): a bind mount
// of /proc/sys/net sets the sysctl of the netns the opening thread is in.
// A ProcSysNet that does not exist sets nothing (it is the one used).
func TestOpenProcSysNet(t *testing.T) {
	testutil.RequireRoot(t, "mounts and network namespaces")
	read := func(fd int) string {
		t.Helper()
		var v []byte
		if err := netns.Do(fd, func() error {
			var err error
			v, err = os.ReadFile(TimeWaitReuse)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(bytes.TrimSpace(v))
	}
	open := func(dir string) (*os.File, Net) {
		t.Helper()
		ns := testutil.NewNetns(t)
		dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		n, err := Netns{ProcSysNet: dir}.Open(handoff.Pod{UID: "u", Name: "p", Namespace: "ns"}, dup)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return ns, n
	}
	mnt := t.TempDir()
	if err := unix.Mount("/proc/sys/net", mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount /proc/sys/net: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	if ns, _ := open(mnt); read(int(ns.Fd())) != "1" {
		t.Errorf("through a mount of /proc/sys/net: %s=%s in the pod's netns, want 1", TimeWaitReuse, read(int(ns.Fd())))
	}
	if ns, _ := open(filepath.Join(t.TempDir(), "missing")); read(int(ns.Fd())) != "2" {
		t.Errorf("through a missing directory: %s=%s, want the default 2 (ProcSysNet not used?)", TimeWaitReuse, read(int(ns.Fd())))
	}
}

// TestListenersMigrateToSuccessor: a second ztunnel's listener binds the
// same pod address beside the first (SO_REUSEPORT), and when the first
// closes, a connection its queue held (handshake done, not accepted) is
// accepted by the second and carries data, instead of being reset: what an
// upgrade relies on for the connections in flight at its switch.
func TestListenersMigrateToSuccessor(t *testing.T) {
	ns := testutil.NewNetns(t)
	oldNet, newNet := openPod(t, ns), openPod(t, ns) // two ztunnels
	oldLns, err := Open(oldNet)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(oldLns)
	// A connection in the old listener's queue, before the new one binds
	// (alone in the group, the old one gets it).
	addr := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", mesh.OutboundPort))
	c, err := netns.DialTCP(context.Background(), int(ns.Fd()), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	newLns, err := Open(newNet)
	if err != nil {
		t.Fatalf("a second ztunnel cannot listen beside the first: %v", err)
	}
	defer closeAll(newLns)
	closeAll(oldLns)
	outbound := newLns[0].Ln
	outbound.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := outbound.Accept()
	if err != nil {
		t.Fatalf("the queued connection did not reach the new listener: %v", err)
	}
	defer s.Close()
	buf := make([]byte, len("queued"))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "queued" {
		t.Fatalf("read %q, %v; want the bytes sent before the switch", buf, err)
	}
	if _, err := s.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		t.Fatalf("the client's connection did not survive the switch: %v", err)
	}
}

func closeAll(lns []*Listener) {
	for _, l := range lns {
		l.Ln.Close()
	}
}

// openPod opens a duplicate of ns as a pod's Net the way ztunnel does
// with agentd's fd, closed when the test ends.
func openPod(t *testing.T, ns *os.File) Net {
	t.Helper()
	dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Netns{}.Open(handoff.Pod{UID: "u", Name: "p", Namespace: "ns"}, dup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestOneListenerTakesEveryKind: the pod's one dual-stack socket takes the
// app's captured connections to 127.0.0.1:15001 and [::1]:15001 (the
// connect hooks' targets) as outbound; a connection from the pod to its
// own address at that port is plaintext (whose destination check refuses
// the mesh port, TestInboundPlaintext); KindOf tells the steered ports
// apart by their local address.
func TestOneListenerTakesEveryKind(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.AddrOnLo(t, ns, netip.MustParseAddr("198.18.7.1"))
	lns, err := Open(openPod(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(lns)
	if len(lns) != Sockets() || lns[0].Kind != Mesh {
		t.Fatalf("Open = %d listeners (%v), want %d of kind %s", len(lns), lns, Sockets(), Mesh)
	}
	ln := lns[0].Ln.(*net.TCPListener)
	for _, tc := range []struct {
		dst  string
		kind Kind
	}{
		{fmt.Sprintf("127.0.0.1:%d", mesh.OutboundPort), Outbound},
		{fmt.Sprintf("[::1]:%d", mesh.OutboundPort), Outbound},
		{fmt.Sprintf("198.18.7.1:%d", mesh.OutboundPort), Plaintext},
	} {
		c, err := netns.DialTCP(context.Background(), int(ns.Fd()), netip.MustParseAddrPort(tc.dst), nil)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.dst, err)
		}
		ln.SetDeadline(time.Now().Add(5 * time.Second))
		s, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept %s: %v", tc.dst, err)
		}
		if got := KindOf(s.LocalAddr()); got != tc.kind {
			t.Errorf("%s: KindOf(%s) = %s, want %s", tc.dst, s.LocalAddr(), got, tc.kind)
		}
		s.Close()
		c.Close()
	}
	// What sk_lookup steers keeps its original destination as the local
	// address: the HBONE port is HBONE, any other port plaintext.
	for _, tc := range []struct {
		local string
		kind  Kind
	}{
		{"198.18.7.1:15008", HBONE},
		{"[fd00::7]:15008", HBONE},
		{"198.18.7.1:8080", Plaintext},
		{"198.18.7.1:15001", Plaintext},
		{"[::ffff:127.0.0.1]:15001", Outbound},
	} {
		if got := KindOf(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tc.local))); got != tc.kind {
			t.Errorf("KindOf(%s) = %s, want %s", tc.local, got, tc.kind)
		}
	}
}
