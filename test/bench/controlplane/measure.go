package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/agentmesh/agentmesh/internal/profile"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// Result is what one run measured.
type Result struct {
	Nodes, Namespaces, Services, Pods int
	Workloads                         int // workloads in each node's view
	Endpoints                         int // ready endpoints of the bench's services in each node's view
	Debounce                          time.Duration
	Populate                          time.Duration // creating every object and waiting for the EndpointSlices
	InitialSync                       time.Duration // connecting every node until each had the full view
	// Controller memory after the initial sync settled and after the changes.
	RSS, HeapInuse           uint64
	RSSAfter, HeapInuseAfter uint64
	// Per change: the Update call's round trip; then, from the Update
	// returning, the baseline informer seeing it, the first node and the
	// last node having received it (the ack follows OnConfig at once).
	Update, Informer, First, Mesh []time.Duration
	Acked                         int // changes the controller's /status showed acked by every node
	// CPU time each party used while the nodes took the initial view, and
	// during the measured changes.
	InitialCPU, ChangesCPU CPU
	// Bytes the controller sent per node: the full view, and the deltas
	// of one measured change.
	FullBytes, ChangeBytes float64
	// Burst: BurstSize changes sent back to back; from the first being
	// sent until the first and the last node had the last one, and how
	// many versions a node applied on the way.
	BurstSize             int
	BurstSend             time.Duration
	BurstFirst, BurstLast time.Duration
	BurstVersions         float64
	// Restart: the controller stopped (a change made meanwhile) and
	// started again with every node retrying; from the new process
	// starting until its /readyz, the first and every node having the
	// view with the change (the nodes' retry backoff included).
	RestartStop                            time.Duration
	RestartReady, RestartFirst, RestartAll time.Duration
	RestartCPU                             CPU
}

// Measure runs the benchmark: control plane, objects, controller, node
// clients, memory, then the changes. It removes everything it made.
func Measure(ctx context.Context, o Options) (res *Result, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "amcpbench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	o.Logger.Info("starting kubernetes control plane", "dir", dir)
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: o.kubeBinDir(), StateDir: filepath.Join(dir, "kube"), Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	defer func() { err = errors.Join(err, cp.Stop()) }()
	cfg := cp.AdminConfig()
	cfg.QPS, cfg.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	r := &run{o: o, dir: dir, cp: cp, client: client, res: &Result{Nodes: o.Nodes, Namespaces: o.Namespaces,
		Services: o.Services, Pods: o.Pods, Debounce: o.Debounce}}
	return r.res, r.measure(ctx)
}

// run is one Measure's state.
type run struct {
	o      Options
	dir    string
	cp     *kubecp.ControlPlane
	client kubernetes.Interface
	res    *Result
}

func (r *run) measure(ctx context.Context) (err error) {
	start := time.Now()
	if err := r.prepare(ctx); err != nil {
		return err
	}
	r.res.Populate = time.Since(start)
	kubeconfig := filepath.Join(r.dir, "controller.kubeconfig")
	if err := writeControllerKubeconfig(ctx, r.client, r.cp.URL(), r.cp.CAFile(), kubeconfig); err != nil {
		return err
	}
	r.o.Logger.Info("starting controller")
	c, err := startController(ctx, r.o, kubeconfig, r.dir)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := c.stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("%w\n--- %s ---\n%s", stopErr, c.logPath, tail(c.logPath, 20)))
		}
	}()
	caFile := filepath.Join(r.dir, "mesh-root.pem")
	if err := writeMeshRoot(ctx, r.client, caFile); err != nil {
		return err
	}
	return r.withNodes(ctx, c, caFile)
}

// prepare installs the CRDs, applies the mesh's RBAC, writes the node tokens, creates the
// objects and waits until the EndpointSlices list every pod.
func (r *run) prepare(ctx context.Context) error {
	if err := lab.InstallMeshCRDs(ctx, r.cp.AdminConfig()); err != nil {
		return err
	}
	if _, err := lab.ApplyMeshObjects(ctx, r.client, manifestPath(ctx, r.o)); err != nil {
		return err
	}
	for i := range r.o.Nodes {
		if err := writeNodeToken(ctx, r.client, i, filepath.Join(r.dir, nodeName(i)+".token")); err != nil {
			return err
		}
	}
	r.o.Logger.Info("creating objects", "services", r.o.Services, "pods", r.o.Pods)
	if err := populate(ctx, r.client, r.o); err != nil {
		return err
	}
	return waitEndpoints(ctx, r.client, r.o)
}

func (r *run) withNodes(ctx context.Context, c *controller, caFile string) (err error) {
	if r.o.ProfileDir != "" {
		// The receivers' side: this process, from the nodes connecting
		// to the end.
		stop, err := profile.Start(filepath.Join(r.o.ProfileDir, "receivers.cpu.prof"), filepath.Join(r.o.ProfileDir, "receivers.alloc.prof"))
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	start := time.Now()
	cpu := startCPU(r.pids(c))
	ns, err := connectNodes(r.o, c, caFile, r.dir, r.o.Logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ns.Close()) }()
	if err := ns.wait(ctx, 2*time.Minute, "every node's initial view", func() bool { return ns.synced(r.o) }); err != nil {
		return err
	}
	r.res.InitialSync = time.Since(start)
	r.res.InitialCPU = cpu.stop()
	full, err := c.pushedBytes(ctx, "full")
	if err != nil {
		return err
	}
	r.res.FullBytes = float64(full) / float64(r.o.Nodes)
	s := ns.list[0].summary()
	r.res.Workloads, r.res.Endpoints = s.workloads, s.endpoints
	time.Sleep(r.o.Settle)
	if r.res.RSS, r.res.HeapInuse, err = c.memory(ctx); err != nil {
		return err
	}
	tns, tname := r.o.serviceRef(0)
	inf, err := startInformer(ctx, r.client, tns, tname, ns.kick)
	if err != nil {
		return err
	}
	defer inf.Close()
	cpu = startCPU(r.pids(c))
	deltas0, err := c.pushedBytes(ctx, "delta")
	if err != nil {
		return err
	}
	if err := r.changes(ctx, c, ns, inf); err != nil {
		return err
	}
	r.res.ChangesCPU = cpu.stop()
	deltas1, err := c.pushedBytes(ctx, "delta")
	if err != nil {
		return err
	}
	r.res.ChangeBytes = float64(deltas1-deltas0) / float64(r.o.Nodes*r.o.Changes)
	r.res.RSSAfter, r.res.HeapInuseAfter, err = c.memory(ctx)
	if err != nil {
		return err
	}
	if err := r.burst(ctx, ns); err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	if err := r.restart(ctx, c, ns); err != nil {
		return fmt.Errorf("controller restart: %w", err)
	}
	return nil
}

// pids are the processes whose CPU time the bench reports.
func (r *run) pids(c *controller) map[string]int {
	p := r.cp.PIDs()
	p["controller"] = c.cmd.Process.Pid
	return p
}

// burst sends BurstSize changes to the target service back to back and
// times the last one's arrival on every node.
func (r *run) burst(ctx context.Context, ns *nodes) error {
	r.res.BurstSize = r.o.Changes
	base := r.o.Changes
	before := ns.applied()
	start := time.Now()
	for k := base + 1; k <= base+r.o.Changes; k++ {
		if err := r.setMark(ctx, k); err != nil {
			return err
		}
	}
	r.res.BurstSend = time.Since(start)
	last := base + r.o.Changes
	var first, all time.Time
	err := ns.wait(ctx, time.Minute, "every node to see the burst's last change", func() bool {
		var ok bool
		first, all, ok = ns.seen(last)
		return ok
	})
	if err != nil {
		return err
	}
	r.res.BurstFirst, r.res.BurstLast = first.Sub(start), all.Sub(start)
	r.res.BurstVersions = float64(ns.applied()-before) / float64(len(ns.list))
	return nil
}

// restart stops the controller, makes a change while it is away, starts
// it again and times every node's stream getting the new view.
func (r *run) restart(ctx context.Context, c *controller, ns *nodes) error {
	stopped := time.Now()
	if err := c.stop(); err != nil {
		return err
	}
	r.res.RestartStop = time.Since(stopped)
	k := 2*r.o.Changes + 1
	if err := r.setMark(ctx, k); err != nil {
		return err
	}
	start := time.Now()
	if err := c.start(ctx, false); err != nil {
		return err
	}
	cpu := startCPU(r.pids(c))
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	r.res.RestartReady = time.Since(start)
	var first, all time.Time
	err := ns.wait(ctx, 2*time.Minute, "every node to have the view of the restarted controller", func() bool {
		var ok bool
		first, all, ok = ns.seen(k)
		return ok
	})
	if err != nil {
		return err
	}
	r.res.RestartCPU = cpu.stop()
	r.res.RestartFirst, r.res.RestartAll = first.Sub(start), all.Sub(start)
	return nil
}

// setMark makes the target service carry port bench-k (replacing the
// previous mark).
func (r *run) setMark(ctx context.Context, k int) error {
	tns, tname := r.o.serviceRef(0)
	svcs := r.client.CoreV1().Services(tns)
	s, err := svcs.Get(ctx, tname, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get service: %w", err)
	}
	s.Spec.Ports = []corev1.ServicePort{s.Spec.Ports[0], {Name: markPrefix + strconv.Itoa(k), Port: int32(10000 + k),
		TargetPort: intstr.FromInt32(int32(10000 + k)), Protocol: corev1.ProtocolTCP}}
	if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update service: %w", err)
	}
	return nil
}

// changes makes the Service changes one at a time and times each.
func (r *run) changes(ctx context.Context, c *controller, ns *nodes, inf *informer) error {
	for k := 1; k <= r.o.Changes; k++ {
		if err := r.change(ctx, c, ns, inf, k); err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
	}
	return nil
}

// change adds port bench-k to the target service (replacing bench-(k-1)),
// waits until every node and the informer saw it and the controller shows
// every node's ack, and records the times.
func (r *run) change(ctx context.Context, c *controller, ns *nodes, inf *informer, k int) error {
	sent := time.Now()
	if err := r.setMark(ctx, k); err != nil {
		return err
	}
	t0 := time.Now()
	var first, last, seen time.Time
	err := ns.wait(ctx, time.Minute, "every node to see the change", func() bool {
		var ok1, ok2 bool
		first, last, ok1 = ns.seen(k)
		seen, ok2 = inf.marks.get(k)
		return ok1 && ok2
	})
	if err != nil {
		return err
	}
	r.res.Update = append(r.res.Update, t0.Sub(sent))
	r.res.First = append(r.res.First, first.Sub(t0))
	r.res.Mesh = append(r.res.Mesh, last.Sub(t0))
	r.res.Informer = append(r.res.Informer, seen.Sub(t0))
	if err := poll(ctx, 30*time.Second, "controller status: every node acked", func() (bool, error) {
		return c.allAcked(ctx, r.o.Nodes)
	}); err != nil {
		return err
	}
	r.res.Acked++
	return nil
}
