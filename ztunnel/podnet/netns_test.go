package podnet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

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
	dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Netns{}.Open(handoff.Pod{UID: "u", Name: "p", Namespace: "ns"}, dup)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
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
