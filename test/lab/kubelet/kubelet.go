// Package kubelet is the lab's fake kubelet: one per simulated node, run as
// a goroutine-owned component inside the lab process. It registers its Node
// (addresses, podCIDRs, Ready condition) and renews its Lease, watches the
// Pods bound to it (spec.nodeName), and for each one asks the lab's
// PodRuntime for a sandbox (netns, veth, cgroup pod<uid>, the resolv.conf
// its dnsPolicy calls for), runs the first container's command in it (env
// with the downward API's fieldRef and resourceFieldRef, $(VAR) expanded
// in command and args, a kubelet-style /etc/hosts), runs its startup,
// readiness and liveness probes (httpGet, tcpSocket, grpc) from the node
// netns and reports the pod's status the way the real kubelet does. On
// deletion it stops the process, removes the sandbox and deletes the Pod
// object with grace period 0.
//
// It does not import the lab: the lab passes a PodRuntime.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// PodRuntime makes pod sandboxes on one node. The lab implements it.
type PodRuntime interface {
	// CreateSandbox makes the pod's network namespace (addresses, routes,
	// a veth to the node) and its cgroup named pod<uid> under the node's.
	CreateSandbox(ctx context.Context, spec SandboxSpec) (Sandbox, error)
	// DialNode dials from the node's network namespace (for probes).
	DialNode(ctx context.Context, network, addr string) (net.Conn, error)
}

// SandboxSpec says which pod a sandbox is for.
type SandboxSpec struct {
	UID, Namespace, Name, ServiceAccount string
	Labels                               map[string]string
	// ResolvConf is what every process of the pod reads as
	// /etc/resolv.conf (for its dnsPolicy); nil leaves the node's.
	ResolvConf []byte
}

// ContainerSpec is one container's process.
type ContainerSpec struct {
	// Name is the container's name (it names the log file).
	Name string
	// Args is the command line; Args[0] is a path.
	Args []string
	// Env is the environment, KEY=value.
	Env []string
	// Hosts is what the process reads as /etc/hosts.
	Hosts []byte
}

// Sandbox is one pod's network namespace and cgroup.
type Sandbox interface {
	// IPs are the pod's addresses, IPv4 first.
	IPs() []netip.Addr
	// Start runs a container's process in the pod's netns and cgroup, with
	// the pod's resolv.conf and the container's hosts file in place.
	Start(c ContainerSpec) (Process, error)
	// Remove kills whatever still runs in the sandbox and removes its
	// netns, links and cgroup. It is safe to call more than once.
	Remove(ctx context.Context) error
}

// Process is a container's process.
type Process interface {
	// PID is the process id.
	PID() int
	// Done is closed once the process has exited and was reaped.
	Done() <-chan struct{}
	// ExitCode is the exit status once Done is closed (128+signal when
	// killed by a signal).
	ExitCode() int
	// Signal sends sig; a process already gone is not an error.
	Signal(sig os.Signal) error
}

// Options configure a Kubelet.
type Options struct {
	// Node is the Node name ("n1").
	Node string
	// Client talks to the apiserver with the node's identity.
	Client kubernetes.Interface
	// Runtime makes the pods' sandboxes.
	Runtime PodRuntime
	// Addresses are the node's InternalIPs.
	Addresses []netip.Addr
	// PodCIDRs are the node's pod ranges (spec.podCIDRs).
	PodCIDRs []netip.Prefix
	// BinDir resolves a bare command[0] ("meshlab") to BinDir/meshlab.
	BinDir string
	// ClusterDNS are the nameservers of pods with dnsPolicy ClusterFirst
	// (kubelet's --cluster-dns: the cluster DNS Service's ClusterIPs);
	// none leaves such pods the node's resolv.conf, as the kubelet does.
	ClusterDNS []netip.Addr
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// Logger receives progress (default: discard).
	Logger *slog.Logger
	// Heartbeat is how often the Lease and the Ready condition are
	// renewed (default 10s).
	Heartbeat time.Duration
	// MaxGrace caps terminationGracePeriodSeconds (default 3s).
	MaxGrace time.Duration
}

// Kubelet runs one node's pods.
type Kubelet struct {
	opts Options
	log  *slog.Logger

	ready chan struct{} // closed once registered and the pod cache has synced

	mu       sync.Mutex         // guards workers and finished
	workers  map[string]*worker // by pod UID
	finished map[string]bool    // pod UIDs whose worker is done: late events are ignored
	wg       sync.WaitGroup     // one per worker goroutine
}

// New checks opts and returns a Kubelet; Run starts it.
func New(opts Options) (*Kubelet, error) {
	if opts.Node == "" || opts.Client == nil || opts.Runtime == nil {
		return nil, errors.New("kubelet needs a node name, a client and a runtime")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 10 * time.Second
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	if opts.MaxGrace == 0 {
		opts.MaxGrace = 3 * time.Second
	}
	return &Kubelet{opts: opts, log: opts.Logger.With("kubelet", opts.Node), workers: map[string]*worker{},
		finished: map[string]bool{}, ready: make(chan struct{})}, nil
}

// Ready is closed once the node is registered and the kubelet has listed
// its pods.
func (k *Kubelet) Ready() <-chan struct{} { return k.ready }

// Run registers the node (retrying until it works), then runs its pods
// until ctx ends. It returns
// after every goroutine it started has stopped; pods' sandboxes and
// processes are left for the owner to remove (the lab does on Close).
func (k *Kubelet) Run(ctx context.Context) error {
	for {
		err := k.register(ctx)
		if err == nil {
			break
		}
		k.log.Warn("register node", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("register node %s: %w", k.opts.Node, err)
		case <-time.After(time.Second):
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { k.heartbeat(ctx) })
	err := k.watchPods(ctx)
	wg.Wait()
	k.wg.Wait()
	return err
}
