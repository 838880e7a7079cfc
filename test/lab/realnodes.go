package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentmesh/agentmesh/test/lab/realnode"
)

// LabImage is the lab's own image (make lab-image) that real nodes import:
// the sample agents (meshlab app) and the pod sandbox (meshlab app pause).
const LabImage = "localhost/agentmesh-lab/apps:lab"

// labImageTarball is where make lab-image writes it, under BinDir.
const labImageTarball = "lab-image/apps-lab.tar"

// RealNodeLabel marks a real node (value "real"): the lab's sample agents
// keep off real nodes, where the lab runs no mesh of its own.
const RealNodeLabel = "agentmesh.io/lab-node"

// realHostFile keeps the host's state from before the first real node, so
// that a cleanup after a crash (meshlab down) restores it too.
const realHostFile = "realnode-host.json"

// RealNodeBinaries are what Options.RealNodes needs under BinDir.
func RealNodeBinaries() []string {
	return append(slices.Clone(realnode.Binaries), labImageTarball, "coredns")
}

// isRealNode reports whether node i runs a real kubelet: the last
// Options.RealNodes of the nodes, in Kubernetes mode.
func (l *Lab) isRealNode(i int) bool {
	return l.opts.Kube && i > l.opts.Nodes-l.opts.RealNodes
}

// RealNodesHost is the host's state from before the real nodes started
// (nil without real nodes, and after Close).
func (l *Lab) RealNodesHost() *realnode.Host {
	if l.kube == nil {
		return nil
	}
	l.kube.mu.Lock()
	defer l.kube.mu.Unlock()
	return l.kube.realHost
}

// RealNodeBPFFS is real node i's bpffs, for the chart's
// node.hostPaths.bpffs ("" when i is not a real node).
func (l *Lab) RealNodeBPFFS(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return filepath.Join(l.realNodeDir(i), "bpffs")
}

// RealNodeRunDir is where real node i's agentd puts its hand-off socket
// for the node's ztunnel pods: the chart's node.hostPaths.run ("" when i
// is not a real node). It is below the node's directory, removed with it.
func (l *Lab) RealNodeRunDir(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return filepath.Join(l.realNodeDir(i), "agentmesh-run")
}

// RealNodeCNIConfDir and RealNodeCNIBinDir are real node i's CNI
// configuration and plugin directories (containerd's conf_dir and first
// bin_dir): the chart's node.cni.confDir and node.cni.binDir ("" when i is
// not a real node).
func (l *Lab) RealNodeCNIConfDir(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return filepath.Join(l.realNodeDir(i), "cni")
}

func (l *Lab) RealNodeCNIBinDir(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return filepath.Join(l.realNodeDir(i), "cni-bin")
}

// RealNodeTagImage gives the image src, imported on every real node, the
// reference dst too (what pushing a new tag would do; an upgrade's image).
func (l *Lab) RealNodeTagImage(ctx context.Context, src, dst string) error {
	if l.kube == nil {
		return errors.New("no real nodes")
	}
	l.kube.mu.Lock()
	nodes := slices.Clone(l.kube.real)
	l.kube.mu.Unlock()
	if len(nodes) == 0 {
		return errors.New("no real nodes")
	}
	for _, n := range nodes {
		if err := n.TagImage(ctx, src, dst); err != nil {
			return err
		}
	}
	return nil
}

// RealNodeCgroup is real node i's cgroup v2 directory, below which its
// kubelet places the pods: the chart's node.hostPaths.cgroupRoot ("" when
// i is not a real node).
func (l *Lab) RealNodeCgroup(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return l.nodeCgroup(i)
}

// RealNodePodLogs is the kubelet's pod log directory of real node i:
// <namespace>_<pod>_<uid>/<container>/<restart>.log, in the CRI format
// ("" when i is not a real node).
func (l *Lab) RealNodePodLogs(i int) string {
	if !l.isRealNode(i) {
		return ""
	}
	return filepath.Join(l.realNodeDir(i), "pods")
}

// realNodeDir holds node i's files (containerd, kubelet, pod logs).
func (l *Lab) realNodeDir(i int) string { return filepath.Join(l.state, nodeName(i)+"-real") }

// startRealNodes starts the kubelet, containerd and the CNI bridge of every
// real node and waits until each Node is Ready.
func (l *Lab) startRealNodes(ctx context.Context) error {
	if l.opts.RealNodes == 0 {
		return nil
	}
	lock, err := realnode.LockHost(ctx)
	if err != nil {
		return err
	}
	if err := l.checkNoCrashedRealNodes(); err != nil {
		lock.Unlock()
		return err
	}
	host, err := realnode.ReadHost()
	if err == nil {
		err = host.Save(filepath.Join(l.state, realHostFile))
	}
	if err != nil {
		lock.Unlock()
		return err
	}
	l.kube.mu.Lock()
	l.kube.realLock, l.kube.realHost = lock, host
	l.kube.mu.Unlock()
	for i := 1; i <= l.opts.Nodes; i++ {
		if !l.isRealNode(i) {
			continue
		}
		kubeconfig := filepath.Join(l.state, nodeName(i)+"-kubelet.kubeconfig")
		if err := l.writeKubeconfig(kubeconfig, "system:node:"+nodeName(i), "system:nodes"); err != nil {
			return err
		}
		proxyKubeconfig := filepath.Join(l.state, nodeName(i)+"-kube-proxy.kubeconfig")
		if err := l.writeKubeconfig(proxyKubeconfig, "system:kube-proxy"); err != nil {
			return err
		}
		procs := filepath.Join(l.cgRoot, nodeName(i)+"-system")
		if err := mkdirCgroup(procs); err != nil {
			return err
		}
		n, err := realnode.Start(ctx, realnode.Options{
			Name: nodeName(i), Netns: netnsPath(l.nodeNetns(i)), Dir: l.realNodeDir(i),
			CgroupRoot: l.id + "/" + nodeName(i), ProcessCgroup: procs,
			PodCIDRs: []netip.Prefix{podPrefixV4(i), podPrefixV6(i)}, NodeIP: nodeIPv4(i),
			ClusterDNS: l.opts.ClusterDNS, ClusterDomain: ClusterDomain,
			BinDir: l.opts.BinDir, Images: append([]string{filepath.Join(l.opts.BinDir, labImageTarball)}, l.opts.RealNodeImages...), SandboxImage: LabImage,
			Kubeconfig: kubeconfig, ProxyKubeconfig: proxyKubeconfig, ClientCAFile: l.kube.cp.ClientCAFile(), Logger: l.log,
			ClusterCIDRs: []netip.Prefix{podRangeV4, podRangeV6}, Labels: map[string]string{RealNodeLabel: "real"},
		})
		if err != nil {
			return fmt.Errorf("real node %s: %w", nodeName(i), err)
		}
		l.kube.mu.Lock()
		l.kube.real = append(l.kube.real, n)
		l.kube.mu.Unlock()
	}
	return l.waitRealNodesReady(ctx)
}

// checkNoCrashedRealNodes fails when another lab's saved host state is
// still there. A lab holds the host lock from its first real node until
// Close restored the host and removed that file, so while this lab holds
// the lock such a file is a crashed lab's (a test binary killed at its
// -timeout runs no cleanup): its kubelets may still run and change the
// host, and this lab would save their values as the host's own.
func (l *Lab) checkNoCrashedRealNodes() error { return crashedRealNodes(StateRoot, l.id) }

// crashedRealNodes is checkNoCrashedRealNodes for labs under root.
func crashedRealNodes(root, self string) error {
	saved, err := filepath.Glob(filepath.Join(root, "*", realHostFile))
	if err != nil {
		return fmt.Errorf("look for crashed labs: %w", err)
	}
	for _, f := range saved {
		if id := filepath.Base(filepath.Dir(f)); id != self {
			return fmt.Errorf("lab %s had real nodes and did not stop (its saved host state %s is there): run meshlab down first, which ends its nodes and restores the host", id, f)
		}
	}
	return nil
}

// waitRealNodesReady waits until every real node's Node is Ready.
func (l *Lab) waitRealNodesReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.ReadyTimeout, 2*time.Minute))
	defer cancel()
	for i := 1; i <= l.opts.Nodes; i++ {
		if !l.isRealNode(i) {
			continue
		}
		var last string
		for {
			node, err := l.kube.client.CoreV1().Nodes().Get(ctx, nodeName(i), metav1.GetOptions{})
			if err == nil && nodeReady(node) {
				break
			}
			last = fmt.Sprint(err)
			if err == nil {
				last = fmt.Sprintf("conditions %v", node.Status.Conditions)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("real node %s not ready: %w (last: %s); kubelet log:\n%s", nodeName(i), ctx.Err(), last,
					logTail(filepath.Join(l.realNodeDir(i), "kubelet.log"), 20))
			case <-time.After(200 * time.Millisecond):
			}
		}
		l.log.Info("real node ready", "node", nodeName(i))
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podRangeV4 and podRangeV6 hold every node's pod range.
var (
	podRangeV4 = netip.MustParsePrefix("198.19.0.0/16")
	podRangeV6 = netip.MustParsePrefix("fd00:19::/32")
)

// writeKubeconfig writes credentials for user (a client certificate of
// the control plane's CA) and the apiserver's address on the wire.
func (l *Lab) writeKubeconfig(path, user string, groups ...string) error {
	cfg, err := l.kube.cp.ClientConfig(user, groups...)
	if err != nil {
		return fmt.Errorf("identity %s: %w", user, err)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters["lab"] = &clientcmdapi.Cluster{Server: l.kube.cp.URL(), CertificateAuthorityData: cfg.CAData}
	out.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	out.Contexts["node"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "node"}
	out.CurrentContext = "node"
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		return fmt.Errorf("write kubeconfig for %s: %w", user, err)
	}
	return nil
}

// stopRealNodes stops every real node (its pods first, through the CRI)
// and then restores the host.
func (l *Lab) stopRealNodes() []error {
	if l.kube == nil {
		return nil
	}
	l.kube.mu.Lock()
	nodes, host, lock := l.kube.real, l.kube.realHost, l.kube.realLock
	l.kube.real, l.kube.realHost, l.kube.realLock = nil, nil, nil
	l.kube.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.Close())
	}
	if host != nil {
		if err := host.Restore(l.state); err != nil {
			errs = append(errs, err) // the saved state stays for meshlab down
		} else if err := os.Remove(filepath.Join(l.state, realHostFile)); err != nil {
			errs = append(errs, fmt.Errorf("host state: %w", err))
		}
	}
	if lock != nil {
		lock.Unlock()
	}
	return errs
}

// removeRealNodeLeftovers is the cleanup of real nodes after a crash,
// once the lab's cgroups and their processes are gone: the host's state
// first, then the mounts under the state dir and the node cgroups in the
// v1 hierarchies. On error the caller keeps the state dir (and so the
// host's saved state) for another try. It does not take the HostLock (a
// crashed lab's is released; a lab whose process still runs holds it):
// another lab's real nodes running meanwhile make the restore's check
// fail.
func removeRealNodeLeftovers(id, state string) error {
	host, err := realnode.LoadHost(filepath.Join(state, realHostFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return errors.Join(host.Restore(state), realnode.UnmountUnder(state), realnode.RemoveCgroupTrees(id))
}
