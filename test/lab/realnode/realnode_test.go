package realnode_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/realnode"
)

const image = "localhost/agentmesh-lab/apps:lab"

// TestStaticPodOnRealNode runs a standalone real node (kubelet,
// containerd, runc, CNI bridge) in a network namespace of its own, has it
// run a pod from the lab's image (make lab-image) as a static pod, talks
// to the pod's app over the CNI network, checks the container's cgroup
// is in the v2 tree under the node's (where the mesh's hooks see it), and
// checks that after Close and Host.Restore the host is as it was: the
// kubelet's sysctls, its fixed directories, the host's nft tables, the
// node's cgroups and directory.
func TestStaticPodOnRealNode(t *testing.T) {
	testutil.RequireRoot(t, "a real node runs containerd and the kubelet in a network namespace")
	bin := lab.RequireModuleBins(t, append(realnode.Binaries, "lab-image/apps-lab.tar")...)
	ns := testutil.NewNetns(t)
	name := fmt.Sprintf("rntest-%d", os.Getpid())
	dir := filepath.Join(os.TempDir(), name)
	cgroupRoot := name + "/node"
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	// Other tests' real nodes (test/lab) change the host too: hold the
	// lock from reading the host until after checking it again.
	lock, err := realnode.LockHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lock.Unlock)
	host, err := realnode.ReadHost()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := realnode.Start(ctx, realnode.Options{
		Name: "rn1", Netns: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd()), Dir: dir, CgroupRoot: cgroupRoot,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24"), netip.MustParsePrefix("fd00:244:7::/64")}, BinDir: bin,
		Images: []string{filepath.Join(bin, "lab-image/apps-lab.tar")}, SandboxImage: image,
		Logger: testutil.TLogger(t, slog.LevelInfo),
	})
	closed := false
	closeNode := func() {
		if closed {
			return
		}
		closed = true
		if n != nil {
			if err := n.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
		if err := host.Restore(dir); err != nil {
			t.Errorf("restore host: %v", err)
		}
	}
	t.Cleanup(closeNode)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StaticPod("echo", `apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: default}
spec:
  containers:
  - name: echo
    image: `+image+`
    imagePullPolicy: Never
    command: ["/usr/local/bin/meshlab", "app", "echo", "--listen", ":8080"]
`); err != nil {
		t.Fatal(err)
	}
	var sb realnode.Sandbox
	for sb.Name == "" {
		sbs, err := n.Sandboxes(ctx)
		for _, s := range sbs {
			if s.Ready && s.IP.IsValid() && strings.HasPrefix(s.Name, "echo") {
				sb = s
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no ready echo sandbox (%v, last error %v); kubelet log:\n%s", sbs, err, realnode.Tail(n.KubeletLog(), 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("pod %s/%s ready at %s in %v", sb.Namespace, sb.Name, sb.IP, time.Since(start).Round(time.Millisecond))
	var got string
	deadline := time.Now().Add(time.Minute)
	for {
		got, err = echoFrom(ns, netip.AddrPortFrom(sb.IP, 8080))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != "hello" {
		t.Fatalf("echo through the CNI bridge = %q, %v", got, err)
	}
	pods, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/unified", cgroupRoot, "kubepods/*/pod*/*"))
	if len(pods) == 0 {
		t.Errorf("no container cgroup under %s in the v2 tree", filepath.Join("/sys/fs/cgroup/unified", cgroupRoot))
	}

	if during, err := realnode.ReadHost(); err == nil {
		t.Logf("host while the node runs: %s", host.Diff(during))
	}
	closeNode()
	now, err := realnode.ReadHost()
	if err != nil {
		t.Fatal(err)
	}
	if d := host.Diff(now); d != "" {
		t.Errorf("host after the node: %s", d)
	}
	for _, h := range realnode.CgroupHierarchies {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, name)); err == nil {
			t.Errorf("cgroup %s/%s left behind", h, name)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left behind", dir)
	}
}

// echoFrom sends "hello" to addr from inside ns and reads the echo.
func echoFrom(ns *os.File, addr netip.AddrPort) (string, error) {
	var got string
	err := netns.Do(int(ns.Fd()), func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}
