// Package balance benchmarks how the mesh spreads requests over a
// Service's replicas when one of them is slow. On a two-node
// Kubernetes-mode lab whose ztunnels run --http-per-request, three
// replicas of meshlab's HTTP agent answer after --fast, --fast and --slow
// (20x by default), and a client sends --requests GETs one after the
// other on one keep-alive connection, in three rows measured in one run:
//
//   - direct: client and replicas outside the mesh; each request to a
//     replica chosen at random by pod IP (what a client gets from
//     kube-proxy, which picks a backend per connection);
//   - mesh round robin: through the mesh by the Service's name, under a
//     TrafficPolicy with loadBalancer RoundRobin;
//   - mesh peak-EWMA: the mesh's default, power of two choices over each
//     endpoint's peak-EWMA latency times its open requests.
//
// Each row warms up with --warm-up requests first (the balancer learns
// then, as it would in service). The table gives p50, p99 and mean, their
// ratio to direct, and the share of requests the slow replica answered.
package balance

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/test/bench/benchkube"
	"github.com/agentmesh/agentmesh/test/lab"
)

// Options size a run. Zero fields take the defaults in brackets.
type Options struct {
	// BinDir holds agentd, ztunnel, meshlab, controller and kube/.
	BinDir string
	// Requests per row [600], after WarmUp requests [60].
	Requests, WarmUp int
	// Fast and Slow are the replicas' answer delays [2ms, 40ms].
	Fast, Slow time.Duration
	Logger     *slog.Logger // progress (nil: discard)
}

func (o Options) withDefaults() (Options, error) {
	o.Requests = cmp.Or(o.Requests, 600)
	o.WarmUp = cmp.Or(o.WarmUp, 60)
	o.Fast = cmp.Or(o.Fast, 2*time.Millisecond)
	o.Slow = cmp.Or(o.Slow, 40*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BinDir == "":
		return o, errors.New("balance bench: no bin dir")
	case o.Requests < 1 || o.Requests > 10000 || o.WarmUp < 0 || o.WarmUp > 10000 || o.Fast < 0 || o.Slow < o.Fast:
		return o, errors.New("balance bench: want 1..10000 requests, 0..10000 warm-up, 0 <= fast <= slow")
	}
	abs, err := filepath.Abs(o.BinDir)
	o.BinDir = abs
	return o, err
}

// Kind is a row.
type Kind int

// The rows, in the order they are measured.
const (
	Direct Kind = iota
	RoundRobin
	PeakEWMA
)

func (k Kind) String() string {
	return [...]string{"direct", "mesh round robin", "mesh peak-EWMA"}[k]
}

// Row is what one row measured.
type Row struct {
	Kind Kind
	// P50, P99 and Mean of the requests' latency as the client measured
	// it (request sent to response read).
	P50, P99, Mean time.Duration
	// Slow is how many requests the slow replica answered, of Answered.
	Slow, Answered int
	Err            error
}

// Result is a run's rows and the sizes they were measured with.
type Result struct {
	Options Options
	Rows    []Row
}

// Names of what the benchmark makes in the lab.
const (
	meshNS    = "balance-bench"
	directNS  = "balance-bench-direct"
	service   = "replicas"
	agentPort = 8080
)

var trafficGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}

// Measure starts the lab, measures the rows and removes the lab again. A
// row that fails does not stop the others; the error joins every row's.
func Measure(ctx context.Context, o Options) (res *Result, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	o.Logger.Info("starting kubernetes-mode lab", "nodes", 2)
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: o.BinDir, KubeBinDir: filepath.Join(o.BinDir, "kube"), Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: o.Logger, ZtunnelArgs: []string{"--http-per-request"}})
	if err != nil {
		return nil, fmt.Errorf("balance bench lab: %w", err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("balance bench: close lab: %w", cerr))
		}
	}()
	s, err := makeSetup(ctx, l, o)
	if err != nil {
		return nil, fmt.Errorf("balance bench setup: %w", err)
	}
	res = &Result{Options: o}
	var errs []error
	for _, k := range []Kind{Direct, RoundRobin, PeakEWMA} {
		r := s.measure(ctx, k)
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, r.Err))
		}
		res.Rows = append(res.Rows, r)
	}
	return res, errors.Join(errs...)
}

// setup is what the rows run between.
type setup struct {
	l      *lab.Lab
	o      Options
	dyn    dynamic.Interface
	client map[string]*lab.Pod // by namespace
	direct []string            // the direct replicas' URLs
	slow   string              // the slow replica's agent name
}

// makeSetup creates both namespaces, a client (n1) and three replicas
// (n2, n2, n1; the first slow) in each, and the Service over the mesh
// replicas; it returns once n1's tunnel routes the Service to all three.
func makeSetup(ctx context.Context, l *lab.Lab, o Options) (*setup, error) {
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	s := &setup{l: l, o: o, dyn: dyn, client: map[string]*lab.Pod{}, slow: "replica-0"}
	if _, err := l.CreateNamespace(ctx, directNS, nil); err != nil {
		return nil, err
	}
	if _, err := l.CreateNamespace(ctx, meshNS, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	for _, ns := range []string{directNS, meshNS} {
		pods = append(pods, agentPod(ns, "client", "n1", 0))
		for i, node := range []string{"n2", "n2", "n1"} {
			delay := o.Fast
			if i == 0 {
				delay = o.Slow
			}
			pods = append(pods, agentPod(ns, fmt.Sprintf("replica-%d", i), node, delay))
		}
	}
	for _, ns := range []string{directNS, meshNS} {
		for _, sa := range []string{"bench-client", "bench-replica"} {
			if err := benchkube.ServiceAccount(ctx, l, ns, sa); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range pods {
		if _, err := l.CreatePod(ctx, p); err != nil {
			return nil, err
		}
	}
	for _, p := range pods {
		lp, err := l.WaitMeshPod(ctx, p.Namespace, p.Name, p.Namespace == meshNS)
		if err != nil {
			return nil, err
		}
		switch {
		case p.Name == "client":
			s.client[p.Namespace] = lp
		case p.Namespace == directNS:
			s.direct = append(s.direct, fmt.Sprintf("http://%s:%d/", lp.IPv4(), agentPort))
		}
	}
	if _, err := l.CreateService(ctx, meshNS, service, map[string]string{"app": "replica"},
		corev1.ServicePort{Name: "http", Port: agentPort, TargetPort: intstr.FromInt32(agentPort), Protocol: corev1.ProtocolTCP}); err != nil {
		return nil, err
	}
	return s, s.waitTunnel(ctx, "three ready endpoints", func(eps int, _ string) bool { return eps == 3 })
}

// agentPod runs meshlab's HTTP agent answering after delay (a client too:
// it makes the calls).
func agentPod(ns, name, node string, delay time.Duration) *corev1.Pod {
	c := corev1.Container{Name: "agent", Image: "meshlab",
		Command: []string{"meshlab", "app", "http", "--name", name, "--listen", fmt.Sprintf(":%d", agentPort), "--delay", delay.String()},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(agentPort)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	labels := map[string]string{"app": "replica"}
	if name == "client" {
		labels = map[string]string{"app": "client"}
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "bench-" + strings.SplitN(name, "-", 2)[0], Containers: []corev1.Container{c}}}
}

// waitTunnel waits (30 s at most) until n1's tunnel has the Service with
// ready endpoints and load-balancing algorithm ("" for none) that ok
// accepts.
func (s *setup) waitTunnel(ctx context.Context, what string, ok func(ready int, algorithm string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	last := "not asked yet"
	for {
		svcs, err := s.l.ZtunnelServices(ctx, 1, meshNS+"/"+service)
		if err == nil && len(svcs) == 1 {
			ready, algo := 0, ""
			for _, e := range svcs[0].Endpoints {
				if e.Ready {
					ready++
				}
			}
			if tp := svcs[0].Traffic; tp != nil && tp.LoadBalancer != nil {
				algo = tp.LoadBalancer.Algorithm
			}
			if ok(ready, algo) {
				return nil
			}
			last = fmt.Sprintf("%d ready, algorithm %q", ready, algo)
		} else {
			last = fmt.Sprint(svcs, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("n1's ztunnel with %s: %w (last: %s)", what, context.Cause(ctx), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// measure sets the row's balancing up, warms up and measures.
func (s *setup) measure(ctx context.Context, k Kind) (r Row) {
	r.Kind = k
	s.o.Logger.Info("measuring", "row", k.String())
	client, tos := s.client[meshNS], []string{fmt.Sprintf("http://%s:%d/", service, agentPort)}
	switch k {
	case Direct:
		client, tos = s.client[directNS], s.direct
	case RoundRobin:
		if r.Err = s.policy(ctx, "RoundRobin"); r.Err != nil {
			return r
		}
	case PeakEWMA:
		if r.Err = s.policy(ctx, ""); r.Err != nil {
			return r
		}
	}
	if s.o.WarmUp > 0 {
		if _, r.Err = s.calls(ctx, client, tos, s.o.WarmUp); r.Err != nil {
			return r
		}
	}
	res, err := s.calls(ctx, client, tos, s.o.Requests)
	if r.Err = err; err != nil {
		return r
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	r.P50, r.P99, r.Mean = ms(res.P50MS), ms(res.P99MS), ms(res.MeanMS)
	r.Slow, r.Answered = res.By[s.slow], res.Status[200]
	if r.Answered != s.o.Requests {
		r.Err = fmt.Errorf("%d of %d requests answered 200: %v", r.Answered, s.o.Requests, res.Status)
	}
	return r
}

// policy sets the Service's TrafficPolicy to algorithm, or deletes it
// ("": the default), and waits until n1's tunnel has the change.
func (s *setup) policy(ctx context.Context, algorithm string) error {
	rc := s.dyn.Resource(trafficGVR).Namespace(meshNS)
	if algorithm == "" {
		if err := rc.Delete(ctx, "balance", metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("delete the traffic policy: %w", err)
		}
	} else {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agentmesh.io/v1alpha1", "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": "balance", "namespace": meshNS},
			"spec": map[string]any{"targetRefs": []any{map[string]any{"group": "", "kind": "Service", "name": service}},
				"loadBalancer": map[string]any{"algorithm": algorithm}}}}
		if _, err := rc.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create the traffic policy: %w", err)
		}
	}
	return s.waitTunnel(ctx, "load balancing "+cmp.Or(algorithm, "by default"), func(ready int, algo string) bool {
		return ready == 3 && algo == algorithm
	})
}

// callsResult is what meshlab's HTTP agent answers on /calls (package
// meshlab imports this one's importer, so the fields read are repeated
// here).
type callsResult struct {
	By     map[string]int `json:"by"`
	Status map[int]int    `json:"status"`
	P50MS  float64        `json:"p50_ms"`
	P99MS  float64        `json:"p99_ms"`
	MeanMS float64        `json:"mean_ms"`
	Error  string         `json:"error,omitempty"`
}

// calls has client send n requests to tos (one of them at random each)
// and returns what it measured.
func (s *setup) calls(ctx context.Context, client *lab.Pod, tos []string, n int) (callsResult, error) {
	q := url.Values{"n": {fmt.Sprint(n)}, "to": tos}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var res callsResult
	code, body, err := client.HTTPGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/calls?%s", agentPort, q.Encode()))
	if err != nil {
		return res, fmt.Errorf("calls: %w", err)
	}
	if err := json.Unmarshal(body, &res); err != nil || code != 200 || res.Error != "" {
		return res, fmt.Errorf("calls: %d %s (%v)", code, body, err)
	}
	return res, nil
}

// WriteTable prints r's rows with the mesh rows' ratios to direct.
func WriteTable(w io.Writer, r *Result) {
	o := r.Options
	fmt.Fprintf(w, "Balancing: %d GETs one after the other on one keep-alive connection (after %d to warm up), n1 -> 3 replicas answering after %v, %v and %v (n2, n2, n1)\n",
		o.Requests, o.WarmUp, o.Slow, o.Fast, o.Fast)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tp50\tp99\tmean\tp99 vs direct\tmean vs direct\tslow replica's share\t")
	var direct *Row
	for i := range r.Rows {
		if r.Rows[i].Kind == Direct && r.Rows[i].Err == nil {
			direct = &r.Rows[i]
		}
	}
	for _, row := range r.Rows {
		if row.Err != nil {
			fmt.Fprintf(tw, "%s\tFAILED: %v\t\t\t\t\t\t\n", row.Kind, row.Err)
			continue
		}
		vs := func(v, d time.Duration) string {
			if row.Kind == Direct || direct == nil || d == 0 {
				return "-"
			}
			return fmt.Sprintf("x%.2f", float64(v)/float64(d))
		}
		var dp99, dmean time.Duration
		if direct != nil {
			dp99, dmean = direct.P99, direct.Mean
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f %%\t\n", row.Kind, ms(row.P50), ms(row.P99), ms(row.Mean),
			vs(row.P99, dp99), vs(row.Mean, dmean), 100*float64(row.Slow)/float64(max(1, row.Answered)))
	}
	tw.Flush()
	fmt.Fprintln(w, "  direct: outside the mesh, each request to a replica at random by pod IP (as kube-proxy picks one per connection)")
	fmt.Fprintln(w, "  mesh round robin: by Service name, TrafficPolicy loadBalancer RoundRobin, per request in the source tunnel")
	fmt.Fprintln(w, "  mesh peak-EWMA: by Service name, the default: power of two choices on peak-EWMA latency x open requests")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
