package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agentmesh/agentmesh/test/lab/kubecp"
	"github.com/agentmesh/agentmesh/test/lab/kubelet"
	"github.com/agentmesh/agentmesh/test/lab/realnode"
)

// In Kubernetes mode the control plane runs in the wire netns and listens
// on the bridge, so nodes (and, through them, pods) reach it directly.
var (
	// KubeAPIIPv4 is the control plane's address on the wire.
	KubeAPIIPv4 = netip.MustParseAddr("198.18.0.254")
	// kubeAPIIPv6 is the wire netns's IPv6 address on the bridge.
	kubeAPIIPv6 = netip.MustParseAddr("fd00:18::fe")
)

// nodesGroupBinding binds the kubelets' group to the system:node role
// (RBAC alone authorizes them; the lab runs no Node authorizer).
const nodesGroupBinding = "amlab:nodes"

// kubeMode is the Kubernetes half of a lab.
type kubeMode struct {
	cp     *kubecp.ControlPlane // nil until started
	config *rest.Config         // cluster-admin, dialling inside the wire netns
	client kubernetes.Interface
	cancel context.CancelFunc // stops the kubelets
	wg     sync.WaitGroup     // one per kubelet

	mu          sync.Mutex // guards the fields below
	procs       []*Process // etcd, kube-apiserver, kube-controller-manager, kube-scheduler
	nextNode    int        // round-robin placement by CreatePod
	real        []*realnode.Node
	realHost    *realnode.Host // the host before the first real node
	realLock    *realnode.HostLock
	hostForward *Forward // the host's way to the apiserver (kubehost.go); nil once closed
	hostAddr    string   // its address
}

// startKube starts the control plane in the wire netns and one fake
// kubelet per node, and waits until every node is registered.
func (l *Lab) startKube(ctx context.Context) error {
	m := &kubeMode{}
	l.kube = m
	if err := l.setupKubeWire(); err != nil {
		return err
	}
	if err := mkdirCgroup(l.kubeCgroup()); err != nil {
		return err
	}
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: l.kubeBinDir(), StateDir: filepath.Join(l.state, "kube"),
		Logger: l.log, Netns: l.wireName(), BindAddr: KubeAPIIPv4, Start: l.startKubeProcess})
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	m.cp, m.config = cp, fastClient(cp.AdminConfig())
	if m.client, err = kubernetes.NewForConfig(m.config); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	if err := l.bindNodesGroup(ctx); err != nil {
		return err
	}
	if err := l.createClusterDNSService(ctx); err != nil {
		return err
	}
	if err := l.startClusterDNS(ctx); err != nil {
		return err
	}
	if err := l.startHostAccess(); err != nil {
		return err
	}
	if err := l.startKubelets(ctx); err != nil {
		return err
	}
	return l.startRealNodes(ctx)
}

// kubeCgroup holds the control plane's processes, so Down kills them too.
func (l *Lab) kubeCgroup() string { return filepath.Join(l.cgRoot, "kube") }

// startKubeProcess is kubecp's StartFunc: it runs on a thread inside the
// wire netns; the process lands in the lab's kube cgroup and pids file.
func (l *Lab) startKubeProcess(name string, args []string, logPath string) (int, error) {
	p, err := startProcess(procSpec{name: name, netns: l.wireName(), cgroup: l.kubeCgroup(),
		args: args, logPath: logPath})
	if err != nil {
		return 0, err
	}
	l.kube.mu.Lock()
	l.kube.procs = append(l.kube.procs, p)
	l.kube.mu.Unlock()
	return p.PID, l.pids.record(p.PID, "kube-"+name)
}

// fastClient lifts client-go's default rate limit (5 qps) for the lab.
func fastClient(c *rest.Config) *rest.Config {
	c.QPS, c.Burst = 100, 200
	return c
}

// bindNodesGroup lets the group system:nodes act as kubelets.
func (l *Lab) bindNodesGroup(ctx context.Context) error {
	b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: nodesGroupBinding},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:nodes"}}}
	_, err := l.kube.client.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind system:nodes: %w", err)
	}
	return nil
}

// startKubelets runs one kubelet per node, as system:node:n<i>.
func (l *Lab) startKubelets(ctx context.Context) error {
	m := l.kube
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	var kls []*kubelet.Kubelet
	for i := 1; i <= l.opts.Nodes; i++ {
		if l.isRealNode(i) {
			continue
		}
		k, err := l.newKubelet(i)
		if err != nil {
			return err
		}
		kls = append(kls, k)
		m.wg.Go(func() {
			if err := k.Run(runCtx); err != nil {
				l.log.Error("kubelet stopped", "node", nodeName(i), "err", err)
			}
		})
	}
	ctx, cancelWait := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancelWait()
	for i, k := range kls {
		select {
		case <-k.Ready():
		case <-ctx.Done():
			return fmt.Errorf("kubelet %s not ready: %w", nodeName(i+1), ctx.Err())
		}
	}
	l.log.Info("kubernetes mode ready", "apiserver", m.cp.URL())
	return nil
}

// newKubelet makes node i's kubelet with its own client identity.
func (l *Lab) newKubelet(i int) (*kubelet.Kubelet, error) {
	cfg, err := l.kube.cp.ClientConfig("system:node:"+nodeName(i), "system:nodes")
	if err != nil {
		return nil, fmt.Errorf("kubelet identity: %w", err)
	}
	cs, err := kubernetes.NewForConfig(fastClient(cfg))
	if err != nil {
		return nil, fmt.Errorf("kubelet client: %w", err)
	}
	return kubelet.New(kubelet.Options{Node: nodeName(i), Client: cs, Runtime: kubeRuntime{l: l, node: i},
		Addresses:  []netip.Addr{nodeIPv4(i), nodeIPv6(i)},
		PodCIDRs:   []netip.Prefix{podPrefixV4(i), podPrefixV6(i)},
		ClusterDNS: l.opts.ClusterDNS, ClusterDomain: ClusterDomain,
		BinDir: l.opts.BinDir, Logger: l.opts.Logger.With("lab", l.id)})
}

// stopKubelets stops every kubelet and waits for them (pods keep running:
// Close removes them after).
func (l *Lab) stopKubelets() {
	if l.kube == nil || l.kube.cancel == nil {
		return
	}
	l.kube.cancel()
	l.kube.wg.Wait()
}

// stopControlPlane closes the host's way in and stops kube-scheduler,
// kube-controller-manager, kube-apiserver and etcd.
func (l *Lab) stopControlPlane() error {
	m := l.kube
	if m == nil {
		return nil
	}
	errs := []error{l.stopHostAccess()}
	if m.cp != nil {
		errs = append(errs, m.cp.Stop())
	}
	m.mu.Lock()
	procs := m.procs
	m.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		errs = append(errs, procs[i].Stop())
	}
	return errors.Join(errs...)
}
