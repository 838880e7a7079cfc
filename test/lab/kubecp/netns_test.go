package kubecp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nsAddr is the control plane's address inside the test's netns.
var nsAddr = netip.MustParseAddr("198.18.250.1")

// TestNetnsAndStartHook runs the control plane inside a fresh netns on a
// non-loopback address, started by a caller's StartFunc.
func TestNetnsAndStartHook(t *testing.T) {
	kubeBinDir(t)
	ns := makeNetns(t)
	h := &hookStarter{}
	t.Cleanup(h.wait) // after the control plane's Stop (cleanups run last-in first-out)
	c := startControlPlane(t, Options{Netns: ns, BindAddr: nsAddr, Start: h.start})

	if got := h.names(); !slices.Equal(got, Binaries) {
		t.Errorf("hook started %v, want %v", got, Binaries)
	}
	nsIno := inode(t, "/run/netns/"+ns)
	for _, p := range c.procs {
		if ino := inode(t, fmt.Sprintf("/proc/%d/ns/net", p.pid)); ino != nsIno {
			t.Errorf("%s runs in netns %d, want %s (%d)", p.name, ino, ns, nsIno)
		}
	}
	// AdminConfig dials inside the netns; the apiserver advertises nsAddr.
	cs := clientset(t, c.AdminConfig())
	eventually(t, "kubernetes endpointslice at "+nsAddr.String(), func(ctx context.Context) (bool, error) {
		s, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return false, ignoreNotFound(err)
		}
		return len(s.Endpoints) == 1 && slices.Equal(s.Endpoints[0].Addresses, []string{nsAddr.String()}), nil
	})
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, p := range c.procs {
		if p.alive() {
			t.Errorf("%s (pid %d) alive after Stop", p.name, p.pid)
		}
	}
}

// makeNetns creates a named netns with lo up holding nsAddr too, removed
// at cleanup. It needs root.
func makeNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to create a netns")
		}
		t.Skip("needs root to create a netns")
	}
	name := fmt.Sprintf("amlab-kubecp-%d", os.Getpid())
	ip(t, "netns", "add", name)
	t.Cleanup(func() { ip(t, "netns", "del", name) })
	ip(t, "-n", name, "link", "set", "lo", "up")
	ip(t, "-n", name, "addr", "add", nsAddr.String()+"/32", "dev", "lo")
	return name
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// hookStarter is a StartFunc that owns its children, as the lab's does.
type hookStarter struct {
	mu      sync.Mutex // guards started
	started []string
	wg      sync.WaitGroup // one per child, done when reaped
}

func (h *hookStarter) start(name string, args []string, logPath string) (int, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	h.mu.Lock()
	h.started = append(h.started, name)
	h.mu.Unlock()
	h.wg.Go(func() { _ = cmd.Wait() })
	return cmd.Process.Pid, nil
}

func (h *hookStarter) names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.started)
}

func (h *hookStarter) wait() { h.wg.Wait() }
