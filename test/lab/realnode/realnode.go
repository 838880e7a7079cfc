// Package realnode runs a real Kubernetes node for the lab: the kubelet
// (built from k8s.io/kubernetes, make kube), containerd v2 with its runc
// shim (make containerd), Debian's runc and the CNI bridge, host-local and
// loopback plugins, all in the node's own network namespace (joined by
// the starting thread, not `ip netns exec`, which would remount /sys and
// hide the cgroup hierarchies) and its own cgroup subtree, with every file
// under one directory. Images come from tarballs imported into
// containerd (no registry is reachable), pods use imagePullPolicy Never
// or IfNotPresent.
//
// What it cannot keep to itself is in host.go: a caller reads the Host
// before the first node starts and restores it after the last stopped.
//
// The cgroups here are hybrid (v1 controllers, v2 at
// /sys/fs/cgroup/unified): the kubelet runs with failCgroupV1: false and
// the cgroupfs driver, and runc places containers in the v2 tree too, at
// <unified>/<CgroupRoot>/kubepods/..., where the mesh's cgroup eBPF hooks
// see them. The capability bounding set lacks CAP_SYS_RESOURCE, so
// containerd runs with restrict_oom_score_adj.
package realnode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// Options describe one node.
type Options struct {
	Name       string // the Node's name
	Netns      string // path of its network namespace (the caller's)
	Dir        string // every file of the node; made by Start, removed by Close
	CgroupRoot string // relative cgroup path made in every hierarchy ("amlab-x/rn1"), removed by Close
	// ProcessCgroup is a cgroup v2 directory containerd, its shims and the
	// kubelet start in ("": the caller's); a crashed caller's cleanup that
	// kills what is in it ends them.
	ProcessCgroup string
	PodCIDRs      []netip.Prefix // the CNI bridge's pod ranges (IPv4, optionally IPv6)
	NodeIP        netip.Addr     // the kubelet's --node-ip (invalid: its own pick)
	// ClusterDNS and ClusterDomain go into pods' resolv.conf (dnsPolicy
	// ClusterFirst); none: the host's.
	ClusterDNS    []netip.Addr
	ClusterDomain string
	BinDir        string // holds kube/kubelet and containerd/{containerd,containerd-shim-runc-v2,ctr}
	// Images are image tarballs (docker-archive or OCI) imported into the
	// node's containerd before the kubelet starts; SandboxImage (one of
	// them) is the pod sandbox's.
	Images       []string
	SandboxImage string
	// Kubeconfig is the kubelet's credentials for the apiserver; "" runs
	// the kubelet standalone (static pods from Dir/manifests only).
	Kubeconfig string
	// ProxyKubeconfig, when set, runs kube-proxy (nftables mode, in the
	// node's netns) with these credentials (the user system:kube-proxy,
	// whom the default binding system:node-proxier authorizes); it leaves
	// the conntrack sysctls alone. ClusterCIDRs are the pod ranges it
	// tells local from remote traffic by.
	ProxyKubeconfig string
	ClusterCIDRs    []netip.Prefix
	// ClientCAFile, when set, is the CA of the clients the kubelet's API
	// accepts (the apiserver's, for logs and exec), which then listens on
	// NodeIP; "": none, on 127.0.0.1 only.
	ClientCAFile string
	// Labels are the Node's own labels (the kubelet's --node-labels).
	Labels map[string]string
	Logger *slog.Logger
}

// Node is a running real node.
type Node struct {
	o          Options
	containerd *proc
	kubelet    *proc
	proxy      *proc
	cgroups    []string // the cgroup directories makeCgroups made, in order
}

// apiAddress is where the kubelet's API listens: on NodeIP for the
// apiserver when it has a client CA to check callers by, else loopback
// only (with no client CA and anonymous off, nothing can call it).
func (n *Node) apiAddress() string {
	if n.o.ClientCAFile != "" && n.o.NodeIP.IsValid() {
		return n.o.NodeIP.String()
	}
	return "127.0.0.1"
}

// Binaries are what a real node runs, relative to Options.BinDir.
var Binaries = []string{"kube/kubelet", "kube/kube-proxy", "containerd/containerd", "containerd/containerd-shim-runc-v2", "containerd/ctr"}

// CgroupHierarchies are the hierarchies a node's cgroups are made in: the
// v1 controllers the kubelet checks, and the v2 tree.
var CgroupHierarchies = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "blkio", "devices", "freezer", "unified"}

// Start starts containerd, imports the images and starts the kubelet; it
// returns when containerd answers (the kubelet registers on its own). On
// error what it made is removed again.
func Start(ctx context.Context, o Options) (_ *Node, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("real node needs %s (make kube containerd): %w", b, err)
		}
	}
	for _, b := range []string{"/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("real node needs %s (make deps: runc, containernetworking-plugins): %w", b, err)
		}
	}
	n := &Node{o: o}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	if err := n.writeFiles(); err != nil {
		return nil, err
	}
	if err := n.makeCgroups(); err != nil {
		return nil, err
	}
	if err := n.mountBPFFS(); err != nil {
		return nil, err
	}
	n.containerd, err = n.start("containerd", filepath.Join(o.BinDir, "containerd/containerd"), "--config", n.path("containerd.toml"))
	if err != nil {
		return nil, err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range o.Images {
		if err := n.ctr(ctx, "images", "import", img); err != nil {
			return nil, fmt.Errorf("import %s: %w", img, err)
		}
	}
	args := []string{"--config", n.path("kubelet.yaml"), "--root-dir", n.path("kubelet"),
		"--cert-dir", n.path("kubelet/pki"), "--hostname-override", o.Name, "--v", "1"}
	if o.NodeIP.IsValid() {
		args = append(args, "--node-ip", o.NodeIP.String())
	}
	if o.Kubeconfig != "" {
		args = append(args, "--kubeconfig", o.Kubeconfig)
	}
	if len(o.Labels) > 0 {
		var kv []string
		for k, v := range o.Labels {
			kv = append(kv, k+"="+v)
		}
		slices.Sort(kv)
		args = append(args, "--node-labels", strings.Join(kv, ","))
	}
	n.kubelet, err = n.start("kubelet", filepath.Join(o.BinDir, "kube/kubelet"), args...)
	if err != nil {
		return nil, err
	}
	if o.ProxyKubeconfig != "" {
		n.proxy, err = n.start("kube-proxy", filepath.Join(o.BinDir, "kube/kube-proxy"), "--config", n.path("kube-proxy.yaml"), "--v", "1")
		if err != nil {
			return nil, err
		}
	}
	return n, nil
}

// StaticPod writes a static pod manifest the kubelet runs (and stops
// when it is removed again).
func (n *Node) StaticPod(name, manifest string) error {
	if err := os.WriteFile(n.path("manifests", name+".yaml"), []byte(manifest), 0o644); err != nil {
		return fmt.Errorf("static pod %s: %w", name, err)
	}
	return nil
}

// BPFFS is the node's own bpffs (Dir/bpffs), a shared mount: the host's
// /sys/fs/bpf may be private, and a DaemonSet's hostPath with
// mountPropagation HostToContainer (the chart's) needs a shared or slave
// one. Every bpffs mount is an instance of its own, so the node's pins
// stay apart from the host's and other nodes'.
func (n *Node) BPFFS() string { return n.path("bpffs") }

// mountBPFFS mounts BPFFS, shared; Close's unmounting removes it.
func (n *Node) mountBPFFS() error {
	if err := os.MkdirAll(n.BPFFS(), 0o755); err != nil {
		return fmt.Errorf("bpffs dir: %w", err)
	}
	if err := syscall.Mount("bpf", n.BPFFS(), "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", n.BPFFS(), err)
	}
	if err := syscall.Mount("", n.BPFFS(), "", syscall.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", n.BPFFS(), err)
	}
	return nil
}

// KubeletLog is the kubelet's log file.
func (n *Node) KubeletLog() string { return n.path("kubelet.log") }

// Dir is the node's directory.
func (n *Node) Dir() string { return n.o.Dir }

// Close stops the kubelet, removes every pod sandbox through the CRI (so
// the CNI plugins release addresses and links), stops containerd, unmounts
// what is left under Dir, removes the cgroups and Dir. It does not restore
// the Host (that is the caller's, after the last node).
func (n *Node) Close() error {
	var errs []error
	if n.proxy != nil {
		errs = append(errs, n.proxy.stop())
	}
	if n.kubelet != nil {
		errs = append(errs, n.kubelet.stop())
	}
	if n.containerd != nil && n.containerd.running() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		errs = append(errs, n.removeSandboxes(ctx))
		cancel()
	}
	if n.containerd != nil {
		errs = append(errs, n.containerd.stop())
	}
	errs = append(errs, n.killShims(), UnmountUnder(n.o.Dir), n.removeCgroups())
	if err := os.RemoveAll(n.o.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", n.o.Dir, err))
	}
	return errors.Join(errs...)
}

func (n *Node) path(parts ...string) string {
	return filepath.Join(append([]string{n.o.Dir}, parts...)...)
}

func (n *Node) socket() string { return n.path("run", "containerd.sock") }

// writeFiles writes containerd's config, the CNI network and the
// kubelet's config. The node's own CNI configuration and plugin
// directories (cni, cni-bin; Debian's plugins come after) are the chart's
// node.cni.confDir and node.cni.binDir, where agentd chains its plugin.
func (n *Node) writeFiles() error {
	for _, d := range []string{"manifests", "cni", "cni-bin", "run", "kubelet/pki", "pods", "volume-plugins"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return fmt.Errorf("real node dir: %w", err)
		}
	}
	containerd := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[8]q, "/usr/lib/cni"]
    conf_dir = %[6]q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "/usr/sbin/runc"
    Root = %[7]q
    SystemdCgroup = false
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
`, n.path("containerd"), n.path("run", "state"), n.socket(), n.socket()+".ttrpc", n.o.SandboxImage, n.path("cni"), n.path("run", "runc"), n.path("cni-bin"))
	var ranges, routes []string
	for _, p := range n.o.PodCIDRs {
		ranges = append(ranges, fmt.Sprintf(`[{"subnet": %q}]`, p.Masked()))
		if p.Addr().Is4() {
			routes = append(routes, `{"dst": "0.0.0.0/0"}`)
		} else {
			routes = append(routes, `{"dst": "::/0"}`)
		}
	}
	cni := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "lab", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [%s], "routes": [%s], "dataDir": %q}},
  {"type": "loopback"}]}
`, strings.Join(ranges, ", "), strings.Join(routes, ", "), n.path("run", "ipam"))
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
containerRuntimeEndpoint: unix://%s
staticPodPath: %s
podLogsDir: %s
volumePluginDir: %s
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: %q}}
authorization: {mode: AlwaysAllow}
address: %s
port: 10250
readOnlyPort: 0
healthzPort: 0
failSwapOn: false
evictionHard: {"memory.available": "0%%", "nodefs.available": "0%%", "imagefs.available": "0%%"}
imageGCHighThresholdPercent: 100
resolvConf: /etc/resolv.conf
`, n.o.CgroupRoot, n.socket(), n.path("manifests"), n.path("pods"), n.path("volume-plugins"), n.o.ClientCAFile, n.apiAddress())
	if len(n.o.ClusterDNS) > 0 {
		var dns []string
		for _, a := range n.o.ClusterDNS {
			dns = append(dns, fmt.Sprintf("%q", a))
		}
		kubelet += fmt.Sprintf("clusterDNS: [%s]\nclusterDomain: %q\n", strings.Join(dns, ", "), n.o.ClusterDomain)
	}
	var cidrs []string
	for _, p := range n.o.ClusterCIDRs {
		cidrs = append(cidrs, p.String())
	}
	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %q}
hostnameOverride: %q
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: %q
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, n.o.ProxyKubeconfig, n.o.Name, strings.Join(cidrs, ","))
	for name, data := range map[string]string{"containerd.toml": containerd, "cni/10-lab.conflist": cni, "kubelet.yaml": kubelet, "kube-proxy.yaml": proxy} {
		if err := os.WriteFile(n.path(name), []byte(data), 0o644); err != nil {
			return fmt.Errorf("real node %s: %w", name, err)
		}
	}
	return nil
}

// makeCgroups makes CgroupRoot in every hierarchy (cpuset with its
// parent's cpus and mems, which a new v1 cpuset lacks).
func (n *Node) makeCgroups() error {
	for _, h := range CgroupHierarchies {
		dir := filepath.Join("/sys/fs/cgroup", h)
		for _, part := range strings.Split(n.o.CgroupRoot, "/") {
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
				continue
			} else if err != nil {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
			n.cgroups = append(n.cgroups, dir)
			if h == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
					if err != nil {
						return fmt.Errorf("cgroup %s: %w", dir, err)
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return fmt.Errorf("cgroup %s: %w", dir, err)
					}
				}
			}
		}
	}
	return nil
}

// removeCgroups removes CgroupRoot's subtree in every hierarchy, deepest
// first (what the kubelet and runc made), then the parents makeCgroups
// made.
func (n *Node) removeCgroups() error {
	errs := []error{RemoveCgroupTrees(n.o.CgroupRoot)}
	for _, d := range slices.Backward(n.cgroups) {
		if err := rmdirRetry(d); err != nil {
			errs = append(errs, err)
		}
	}
	n.cgroups = nil
	return errors.Join(errs...)
}

// RemoveCgroupTrees removes rel's subtree in every hierarchy, deepest
// first; the cgroups must be empty (their processes gone).
func RemoveCgroupTrees(rel string) error {
	var errs []error
	for _, h := range CgroupHierarchies {
		root := filepath.Join("/sys/fs/cgroup", h, rel)
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // a missing root is fine
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := rmdirRetry(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes an empty cgroup, waiting briefly for exiting tasks.
func rmdirRetry(d string) error {
	var err error
	for range 50 {
		if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", d, err)
}

// waitContainerd waits until containerd's CRI answers.
func (n *Node) waitContainerd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		last = n.withCRI(ctx, func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.Version(ctx, &runtimeapi.VersionRequest{})
			return err
		})
		if last == nil {
			return nil
		}
		select {
		case <-n.containerd.done:
			return fmt.Errorf("containerd exited: %v; log:\n%s", n.containerd.exitErr, Tail(n.path("containerd.log"), 20))
		case <-ctx.Done():
			return fmt.Errorf("containerd not answering: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withCRI calls fn with a CRI runtime client on containerd's socket.
func (n *Node) withCRI(ctx context.Context, fn func(runtimeapi.RuntimeServiceClient) error) error {
	conn, err := grpc.NewClient("unix://"+n.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("cri client: %w", err)
	}
	defer conn.Close()
	return fn(runtimeapi.NewRuntimeServiceClient(conn))
}

// removeSandboxes stops and removes every pod sandbox (and so its
// containers, network and netns).
func (n *Node) removeSandboxes(ctx context.Context) error {
	return n.withCRI(ctx, func(c runtimeapi.RuntimeServiceClient) error {
		l, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			return fmt.Errorf("list pod sandboxes: %w", err)
		}
		var errs []error
		for _, s := range l.Items {
			if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
				errs = append(errs, fmt.Errorf("stop sandbox %s: %w", s.Metadata.GetName(), err))
			}
			if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
				errs = append(errs, fmt.Errorf("remove sandbox %s: %w", s.Metadata.GetName(), err))
			}
		}
		return errors.Join(errs...)
	})
}

// Sandbox is one pod sandbox of the node.
type Sandbox struct {
	Namespace, Name string
	Ready           bool
	IP              netip.Addr // its pod IP (invalid: none yet)
}

// Sandboxes lists the node's pod sandboxes.
func (n *Node) Sandboxes(ctx context.Context) ([]Sandbox, error) {
	var out []Sandbox
	err := n.withCRI(ctx, func(c runtimeapi.RuntimeServiceClient) error {
		l, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			return fmt.Errorf("list pod sandboxes: %w", err)
		}
		for _, s := range l.Items {
			sb := Sandbox{Namespace: s.Metadata.GetNamespace(), Name: s.Metadata.GetName(), Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY}
			st, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: s.Id})
			if err != nil {
				return fmt.Errorf("sandbox %s status: %w", sb.Name, err)
			}
			sb.IP, _ = netip.ParseAddr(st.GetStatus().GetNetwork().GetIp())
			out = append(out, sb)
		}
		return nil
	})
	return out, err
}

// killShims ends the runc shims this node's containerd started that are
// still running (a shim outlives containerd by design); they name its
// socket on their command line.
func (n *Node) killShims() error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	var errs []error
	for _, p := range procs {
		pid := 0
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil || pid <= 0 {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), "containerd-shim-runc-v2") || !strings.Contains(string(cmd), n.socket()) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill shim %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// UnmountUnder unmounts every mount point under dir, deepest first
// (sandboxes' shm, container rootfs, netns bind mounts left by a crash).
func UnmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// TagImage gives the node's image src (imported) the reference dst too,
// as a registry would serve a new tag of the same image (an upgrade).
func (n *Node) TagImage(ctx context.Context, src, dst string) error {
	return n.ctr(ctx, "images", "tag", "--force", src, dst)
}

// ctr runs containerd's ctr against the node's containerd, k8s.io
// namespace (the CRI's).
func (n *Node) ctr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(n.o.BinDir, "containerd/ctr"),
		append([]string{"--address", n.socket(), "--namespace", "k8s.io"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Tail is the last n lines of the file at path, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// proc is a node process: started in the node's netns, logging to
// Dir/<name>.log, in a process group of its own.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

func (n *Node) start(name, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(n.path(name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The shim is found next to containerd; runc and the CNI plugins by path.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(n.o.BinDir, "containerd")+":/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if n.o.ProcessCgroup != "" {
		cg, err := os.Open(n.o.ProcessCgroup)
		if err != nil {
			return nil, fmt.Errorf("%s cgroup: %w", name, err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cg.Fd())
	}
	if err := netns.DoPath(n.o.Netns, cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	n.o.Logger.Info("real node process started", "node", n.o.Name, "process", name, "pid", cmd.Process.Pid)
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, SIGKILL after 10 s, and waits.
func (p *proc) stop() error {
	if !p.running() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	<-p.done
	return nil
}
