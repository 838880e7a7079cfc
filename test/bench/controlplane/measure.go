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
	start := time.Now()
	ns, err := connectNodes(r.o, c, caFile, r.dir, r.o.Logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ns.Close()) }()
	if err := ns.wait(ctx, 2*time.Minute, "every node's initial view", func() bool { return ns.synced(r.o) }); err != nil {
		return err
	}
	r.res.InitialSync = time.Since(start)
	s := ns.list[0].summary()
	r.res.Workloads, r.res.Endpoints = s.workloads, s.endpoints
	time.Sleep(r.o.Settle)
	if r.res.RSS, r.res.HeapInuse, err = c.memory(ctx); err != nil {
		return err
	}
	if err := r.changes(ctx, c, ns); err != nil {
		return err
	}
	r.res.RSSAfter, r.res.HeapInuseAfter, err = c.memory(ctx)
	return err
}

// changes makes the Service changes one at a time and times each.
func (r *run) changes(ctx context.Context, c *controller, ns *nodes) error {
	tns, tname := r.o.serviceRef(0)
	inf, err := startInformer(ctx, r.client, tns, tname, ns.kick)
	if err != nil {
		return err
	}
	defer inf.Close()
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
	tns, tname := r.o.serviceRef(0)
	svcs := r.client.CoreV1().Services(tns)
	s, err := svcs.Get(ctx, tname, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get service: %w", err)
	}
	s.Spec.Ports = []corev1.ServicePort{s.Spec.Ports[0], {Name: markPrefix + strconv.Itoa(k), Port: int32(10000 + k),
		TargetPort: intstr.FromInt32(int32(10000 + k)), Protocol: corev1.ProtocolTCP}}
	sent := time.Now()
	if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update service: %w", err)
	}
	t0 := time.Now()
	var first, last, seen time.Time
	err = ns.wait(ctx, time.Minute, "every node to see the change", func() bool {
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
