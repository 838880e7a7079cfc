package netns_test

import (
	"os"
	"runtime"
	"testing"

	"github.com/agentmesh/agentmesh/internal/netns"

	"github.com/agentmesh/agentmesh/internal/testutil"

	"golang.org/x/sys/unix"
)

// currentNetns opens the calling thread's network namespace.
func currentNetns(t *testing.T) *os.File {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestDoAndCookie(t *testing.T) {
	host := currentNetns(t) // before newNetns: its thread may be the main one
	ns := testutil.NewNetns(t)
	hostCookie, err := netns.Cookie(int(host.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	nsCookie, err := netns.Cookie(int(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if nsCookie == 0 || nsCookie == hostCookie {
		t.Fatalf("cookies: netns %d, host %d; want distinct and non-zero", nsCookie, hostCookie)
	}
	// A socket made inside Do belongs to the namespace; the thread goes back.
	var fd int
	if err := netns.Do(int(ns.Fd()), func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if got, err := netns.SocketNetnsCookie(fd); err != nil || got != nsCookie {
		t.Errorf("socket made in Do: cookie %d, %v; want %d", got, err, nsCookie)
	}
	for range 20 { // no thread was left in the namespace
		if c, err := netns.Cookie(int(host.Fd())); err != nil || c != hostCookie {
			t.Fatalf("host cookie changed to %d (%v)", c, err)
		}
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := netns.SocketNetnsCookie(s)
		unix.Close(s)
		if c != hostCookie {
			t.Fatalf("a thread was left in the test namespace")
		}
	}
}
