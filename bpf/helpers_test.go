package bpf

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// requireRoot fails under CI=true and skips otherwise when not root.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "loads eBPF programs (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
}

func loadObjects(t *testing.T) *Objects {
	t.Helper()
	requireRoot(t)
	o, err := Load(nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newNetns makes a network namespace with lo up; it lives until cleanup.
func newNetns(t *testing.T) *os.File { return testutil.NewNetns(t) }

func inNetns(t *testing.T, ns *os.File, fn func() error) {
	t.Helper()
	if err := netns.Do(int(ns.Fd()), fn); err != nil {
		t.Fatal(err)
	}
}

// addAddr adds cidr (without DAD) to the link named dev inside ns.
func addAddr(t *testing.T, ns *os.File, dev, cidr string) {
	t.Helper()
	inNetns(t, ns, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		a.Flags = unix.IFA_F_NODAD
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", cidr, dev, err)
		}
		return netlink.LinkSetUp(l)
	})
}

func listen(t *testing.T, ns *os.File, network, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // MPTCP sockets cannot go into a SOCKHASH
	inNetns(t, ns, func() (err error) {
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// acceptFrom accepts on ln until a conn from remote arrives.
func acceptFrom(t *testing.T, ln *net.TCPListener, remote string) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			t.Fatalf("accept on %s (want conn from %s): %v", ln.Addr(), remote, err)
		}
		if c.RemoteAddr().String() == remote {
			t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
	}
}

// cgroup2Root is the cgroup v2 mount point from /proc/self/mountinfo.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4]
			}
		}
	}
	t.Fatal("no cgroup2 mount in /proc/self/mountinfo")
	return ""
}

// newCgroup makes a throwaway cgroup v2 directory, removed on cleanup.
func newCgroup(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(cgroup2Root(t), randomName("amtest-bpf-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	return dir
}
