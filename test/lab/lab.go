// Package lab simulates a cluster on one Linux machine: nodes and pods are
// network namespaces with their own cgroup v2 directories, joined by a
// bridge, and the real agentd and ztunnel binaries run once per node.
// Everything a lab makes is named after its id (amlab-<6 hex>) so that
// Close, or Down after a crash, removes all of it. It needs root.
//
// Layout: a "wire" netns <id>-wire holds bridge br0; node i is netns
// <id>-n<i> with eth0 on the bridge (198.18.0.<i>/24, fd00:18::<i>/64),
// forwarding on and routes to the other nodes' pod ranges. Pod k on node i
// is netns <id>-<pod> with eth0 (198.19.<i>.<k>/32, fd00:19:<i>::<k>/128)
// whose peer vethK in the node netns holds the gateway 198.19.<i>.1 and
// fd00:19:<i>::1. cgroups: <cgroup2 root>/<id>/n<i>[/<pod>]; pins:
// /sys/fs/bpf/<id>/n<i>; state: /run/amlab/<id> (mesh.json, ca.pem,
// ca-key.pem, one log per process, and the pids file Down uses).
//
// Kubernetes mode (Options.Kube): etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler (package kubecp) run in the
// wire netns, listening on the bridge address 198.18.0.254, in cgroup
// <id>/kube, with their state under <state>/kube; a fake kubelet per node
// (package kubelet) registers Node n<i> and runs the Pods bound to it, each
// in netns <id>-pod<uid> and cgroup <node cgroup>/pod<uid>, addressed as
// above, its processes in mount namespaces of their own that show the
// kubelet's resolv.conf and hosts (<state>/pods/pod<uid>/, podmounts.go).
// kube-scheduler binds the pods of Deployments and the like; CreatePod
// places a pod round-robin itself. Service kube-system/kube-dns holds the
// cluster DNS VIPs (kubedns.go). The host reaches the apiserver through a
// loopback port forwarded into the wire netns (HostKubeconfig,
// kubehost.go). With StartMesh (kubemesh.go) the lab applies the
// chart's namespace, ServiceAccounts and RBAC (deploy/manifests), runs the
// AgentMesh controller in the wire netns on 198.18.0.254:15012 with a
// token of ServiceAccount agentmesh-controller, creates a Pod object
// agentmesh-system/agentmesh-node-n<i> per node (the kubelet does not run
// it), and starts agentd and ztunnel in Kubernetes mode with a token bound
// to that pod (<state>/n<i>/token) and the mesh root from ConfigMap
// agentmesh-ca-root (<state>/ca-root.pem).
//
// The lab restarts an agentd, ztunnel or controller replica that exits
// without being asked to, as its DaemonSet or Deployment would, with a
// kubelet-like backoff (supervisor.go); PID, Restarts and WaitRestarted
// let tests follow it.
//
// Processes (agentd, ztunnel, pod workloads) are forked from a locked OS
// thread that has joined the target netns, so they are born in it, and are
// placed in their cgroup by clone3(CLONE_INTO_CGROUP). `ip netns exec` is
// not used because it remounts /sys, which would hide bpffs and cgroupfs
// from agentd.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Options configure a lab.
type Options struct {
	// Nodes is the number of nodes (1..250).
	Nodes int
	// BinDir holds the agentd, ztunnel and meshlab binaries (see BuildBinaries).
	BinDir string
	// Logger receives the lab's own progress (default: discard).
	Logger *slog.Logger
	// CertLifetime is passed to ztunnel's --cert-lifetime (default 1h).
	CertLifetime time.Duration
	// ControllerArgs are more flags for every controller replica (Kube).
	ControllerArgs []string
	// TrustDomain of the mesh (default cluster.local).
	TrustDomain string
	// StartMesh starts agentd and ztunnel on every node.
	StartMesh bool
	// ReadyTimeout bounds the wait for a node's ztunnel to be ready and for
	// pods to be set up (default 30s).
	ReadyTimeout time.Duration
	// Kube runs the lab in Kubernetes mode: etcd, kube-apiserver and
	// kube-controller-manager in the wire netns, and a fake kubelet per
	// node that runs the Pods bound to it (see kube.go).
	Kube bool
	// RealNodes, in Kubernetes mode, makes the last RealNodes of the nodes
	// real ones (test/lab/realnode): a kubelet built from source with
	// containerd, runc and the CNI bridge in the node's netns, running the
	// Pods bound to it as containers from the lab's image (LabImage; make
	// kube containerd lab-image). The lab starts no agentd or ztunnel
	// there (the chart's DaemonSet does); Close restores what they
	// change on the host.
	RealNodes int
	// RealNodeImages are more image tarballs every real node imports (make
	// image's, for the chart).
	RealNodeImages []string
	// KubeBinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler (default BinDir/kube; `make kube` builds them, and
	// kubectl, into bin/kube).
	KubeBinDir string
	// ClusterDNS are, in Kubernetes mode, the ClusterIPs of the cluster
	// DNS Service kube-system/kube-dns and the nameservers in the
	// resolv.conf of every pod with dnsPolicy ClusterFirst (default
	// ClusterDNSIPv4 and ClusterDNSIPv6; see kubedns.go).
	ClusterDNS []netip.Addr
	// ZtunnelArgs are added to every ztunnel's command line (for example
	// --max-connections=N).
	ZtunnelArgs []string
	// AgentdArgs are added to every agentd's command line (for example
	// --sockmap-accel).
	AgentdArgs []string
	// ProfileDir, when set, receives each ztunnel's CPU profile of its
	// whole run (ztunnel-<node>.cpu.prof) and allocation profile at exit
	// (ztunnel-<node>.alloc.prof).
	ProfileDir string
	// Manifest is a rendered chart whose Namespace, ServiceAccount and
	// RBAC objects Kubernetes mode applies before it starts the controller
	// (default: the one built into the binary, deploy.Manifest; a file
	// that does not exist makes the lab create a minimal set, see
	// kubemeshobjects.go).
	Manifest string
}

// Lab is a running simulated cluster. Its methods are safe for concurrent use.
type Lab struct {
	id      string
	opts    Options
	log     *slog.Logger
	state   string // /run/amlab/<id>
	cgRoot  string // <cgroup2 root>/<id>
	pinRoot string // /sys/fs/bpf/<id>
	pids    *pidsFile
	kube    *kubeMode   // Kubernetes mode; nil in standalone mode. Set by build before New returns.
	sup     *supervisor // runs agentd, ztunnel and the controllers, restarting them when they die

	mu        sync.Mutex // guards the fields below
	cfg       meshconfig.Config
	pods      map[string]*Pod
	nextPod   map[int]int // node -> next pod index
	processes []*Process  // started in pods
	captures  []*Capture  // stopped by Close
	closed    bool
}

// New builds a lab. On any error it removes whatever it made.
func New(ctx context.Context, opts Options) (*Lab, error) {
	l, err := newLab(opts)
	if err != nil {
		return nil, err
	}
	if err := l.build(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// newLab checks opts and fills in defaults.
func newLab(opts Options) (*Lab, error) {
	if opts.Nodes < 1 || opts.Nodes > 250 {
		return nil, fmt.Errorf("nodes must be 1..250, got %d", opts.Nodes)
	}
	if opts.RealNodes < 0 || opts.RealNodes > opts.Nodes || (opts.RealNodes > 0 && !opts.Kube) {
		return nil, fmt.Errorf("real nodes must be 0..%d, in Kubernetes mode; got %d", opts.Nodes, opts.RealNodes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.CertLifetime == 0 {
		opts.CertLifetime = time.Hour
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = mesh.DefaultTrustDomain
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.ClusterDNS == nil {
		opts.ClusterDNS = []netip.Addr{ClusterDNSIPv4, ClusterDNSIPv6}
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	root, err := CgroupRoot()
	if err != nil {
		return nil, err
	}
	state := filepath.Join(StateRoot, id)
	log := opts.Logger.With("lab", id)
	pids := &pidsFile{path: filepath.Join(state, "pids")}
	return &Lab{
		id: id, opts: opts, log: log,
		state: state, cgRoot: filepath.Join(root, id), pinRoot: filepath.Join(BPFRoot, id),
		pids:    pids,
		sup:     newSupervisor(log, defaultBackoff, opts.ReadyTimeout, pids.record),
		cfg:     meshconfig.Config{TrustDomain: opts.TrustDomain, Workloads: []meshconfig.Workload{}},
		pods:    map[string]*Pod{},
		nextPod: map[int]int{},
	}, nil
}

// build makes the state dir, the wire, the nodes and optionally the mesh.
func (l *Lab) build(ctx context.Context) error {
	if err := os.MkdirAll(l.state, 0o755); err != nil {
		return fmt.Errorf("make state dir: %w", err)
	}
	if err := l.saveConfig(); err != nil {
		return err
	}
	if err := l.setupWire(); err != nil {
		return err
	}
	for i := 1; i <= l.opts.Nodes; i++ {
		if err := os.MkdirAll(l.nodeCgroup(i), 0o755); err != nil {
			return fmt.Errorf("make node cgroup: %w", err)
		}
		if err := l.setupNode(i); err != nil {
			return err
		}
	}
	l.log.Info("lab network ready", "nodes", l.opts.Nodes, "state", l.state)
	if l.opts.Kube {
		if err := l.startKube(ctx); err != nil {
			return err
		}
	}
	if !l.opts.StartMesh {
		return nil
	}
	return l.startMesh(ctx)
}

// ID is the lab id (amlab-<6 hex>).
func (l *Lab) ID() string { return l.id }

// StateDir is the lab's state directory (config, CA, logs, pids).
func (l *Lab) StateDir() string { return l.state }

// Nodes is the number of nodes.
func (l *Lab) Nodes() int { return l.opts.Nodes }

// NodeIPv4 is node i's address on the wire (198.18.0.<i>).
func (l *Lab) NodeIPv4(i int) netip.Addr { return nodeIPv4(i) }

// NodeIPv6 is node i's address on the wire (fd00:18::<i>).
func (l *Lab) NodeIPv6(i int) netip.Addr { return nodeIPv6(i) }

// PodGatewayV4 is node i's address on every pod veth (198.19.<i>.1): the
// source of the node's own connections to its pods, the kubelet's probes
// among them.
func (l *Lab) PodGatewayV4(i int) netip.Addr { return podIPv4(i, 1) }

// NodeNetns is the name of node i's network namespace.
func (l *Lab) NodeNetns(i int) string { return l.nodeNetns(i) }

// NodeNetnsPath is the path of node i's network namespace.
func (l *Lab) NodeNetnsPath(i int) string { return netnsPath(l.nodeNetns(i)) }

// ConfigPath is the mesh config file shared by all nodes.
func (l *Lab) ConfigPath() string { return filepath.Join(l.state, "mesh.json") }

// nodeCgroup is node i's cgroup directory.
func (l *Lab) nodeCgroup(i int) string { return filepath.Join(l.cgRoot, nodeName(i)) }

// saveConfig writes the mesh config; the caller holds l.mu or owns l alone.
func (l *Lab) saveConfig() error {
	return meshconfig.Save(l.ConfigPath(), &l.cfg)
}
