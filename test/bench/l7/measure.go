package l7

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
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
	BinDir string // agentd, ztunnel, meshlab, controller and kube/
	// HTTP: Rate requests/s [500] over Conns keep-alive connections [8]
	// for Duration [5s], Size-byte bodies each way [1024].
	Duration time.Duration
	Rate     float64
	Conns    int
	Size     int
	// MCP: Sessions calling tools/call back to back [4] for MCPDuration
	// [5s].
	Sessions    int
	MCPDuration time.Duration
	Logger      *slog.Logger // progress (nil: discard)
}

func (o Options) withDefaults() (Options, error) {
	o.Duration = cmp.Or(o.Duration, 5*time.Second)
	o.Rate = cmp.Or(o.Rate, 500)
	o.Conns = cmp.Or(o.Conns, 8)
	o.Size = cmp.Or(o.Size, 1024)
	o.Sessions = cmp.Or(o.Sessions, 4)
	o.MCPDuration = cmp.Or(o.MCPDuration, 5*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BinDir == "" {
		return o, errors.New("l7 bench: no bin dir")
	}
	abs, err := filepath.Abs(o.BinDir)
	o.BinDir = abs
	return o, err
}

func (o Options) meshlab() string { return filepath.Join(o.BinDir, "meshlab") }

// Kind is how a row's traffic goes.
type Kind int

// The rows, in the order they are measured.
const (
	Direct   Kind = iota // outside the mesh, by pod IP
	L4                   // through the mesh, Service port declared tcp: bytes
	L7                   // through the mesh, Service port declared http (mcp): per request
	L7Policy             // as L7, and an AgentPolicy with http and mcp rules: the destination decides each request
)

func (k Kind) String() string {
	return [...]string{"direct", "mesh L4", "mesh L7", "mesh L7 + policy"}[k]
}

// Cost is what both ztunnels spent on a run.
type Cost struct {
	CPUPer1000 time.Duration // CPU time of both ztunnels per 1000 answered requests
	RSS        int64         // both ztunnels' RSS after the run, bytes
}

// Run is one measurement of a row: its result, what the tunnels spent,
// and how many requests each tunnel counted meanwhile.
type Run[T any] struct {
	Result   T
	Cost     *Cost   // nil for direct
	Src, Dst float64 // agentmesh_requests_total growth in n1's (source) and n2's (destination) ztunnel
}

// Row is what one row measured. Err is set when it could not be measured
// completely or its traffic did not go the way the row says.
type Row struct {
	Kind Kind
	HTTP Run[HTTPResult]
	MCP  Run[MCPResult]
	Err  error
}

// Result is a run's rows and the sizes they were measured with.
type Result struct {
	Options Options
	Rows    []Row
}

// Names of what the benchmark makes in the lab.
const (
	meshNS    = "l7-bench"
	directNS  = "l7-bench-direct"
	serverApp = "bench-server"
	port      = 8080 // every pod's bench-l7-server
	// Services in meshNS in front of the mesh server.
	l4Service  = "bench-l4" // port 8080 appProtocol tcp
	l7Service  = "bench-l7" // port 8080 appProtocol http, 8081 agentmesh.io/mcp
	mcpPort    = 8081
	policyName = "bench-l7"
	clientSA   = "bench-client"
)

// Measure starts a Kubernetes-mode lab whose ztunnels proxy HTTP per
// request, measures the rows and removes the lab again. A row that fails
// does not stop the others; the error joins every row's.
func Measure(ctx context.Context, o Options) (res *Result, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	o.Logger.Info("starting kubernetes-mode lab", "nodes", 2)
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: o.BinDir, KubeBinDir: filepath.Join(o.BinDir, "kube"), Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: o.Logger, ZtunnelArgs: []string{"--http-per-request"}})
	if err != nil {
		return nil, fmt.Errorf("l7 bench lab: %w", err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("l7 bench: close lab: %w", cerr))
		}
	}()
	s, err := makeSetup(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("l7 bench setup: %w", err)
	}
	res = &Result{Options: o}
	var errs []error
	for _, k := range []Kind{Direct, L4, L7, L7Policy} {
		if k == L7Policy {
			if err := applyPolicy(ctx, l, o, s); err != nil {
				errs = append(errs, err)
				break
			}
		}
		r := measureRow(ctx, l, o, s, k)
		o.Logger.Info("measured", "row", k.String(), "p50_us", r.HTTP.Result.P50us, "mcp_calls_per_s", r.MCP.Result.PerSecond, "err", r.Err)
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, r.Err))
		}
		res.Rows = append(res.Rows, r)
	}
	return res, errors.Join(errs...)
}

// setup is what the rows run between.
type setup struct {
	directClient, directServer *lab.Pod
	meshClient, meshServer     *lab.Pod
	l4VIP, l7VIP               netip.Addr
}

// urls are the row's HTTP echo and MCP endpoints.
func (s *setup) urls(k Kind) (echo, mcp string) {
	switch k {
	case Direct:
		a := netip.AddrPortFrom(s.directServer.IPv4(), port).String()
		return "http://" + a + EchoPath, "http://" + a + MCPPath
	case L4:
		a := netip.AddrPortFrom(s.l4VIP, port).String()
		return "http://" + a + EchoPath, "http://" + a + MCPPath
	}
	return "http://" + netip.AddrPortFrom(s.l7VIP, port).String() + EchoPath,
		"http://" + netip.AddrPortFrom(s.l7VIP, mcpPort).String() + MCPPath
}

func (s *setup) client(k Kind) *lab.Pod {
	if k == Direct {
		return s.directClient
	}
	return s.meshClient
}

// makeSetup creates the namespaces, a client pod on n1 and a server pod on
// n2 in each, and the two Services in front of the mesh server; it returns
// once n1's ztunnel routes both to the server. The lab's Close removes it.
func makeSetup(ctx context.Context, l *lab.Lab) (*setup, error) {
	if _, err := l.CreateNamespace(ctx, directNS, nil); err != nil {
		return nil, err
	}
	if _, err := l.CreateNamespace(ctx, meshNS, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		return nil, err
	}
	pods := []*corev1.Pod{
		benchPod(directNS, "client", "n1", nil), benchPod(directNS, "server", "n2", nil),
		benchPod(meshNS, "client", "n1", nil), benchPod(meshNS, "server", "n2", map[string]string{"app": serverApp}),
	}
	for _, p := range pods {
		if err := benchkube.ServiceAccount(ctx, l, p.Namespace, p.Spec.ServiceAccountName); err != nil {
			return nil, err
		}
		if _, err := l.CreatePod(ctx, p); err != nil {
			return nil, err
		}
	}
	var got []*lab.Pod
	for _, p := range pods {
		lp, err := l.WaitMeshPod(ctx, p.Namespace, p.Name, p.Namespace == meshNS)
		if err != nil {
			return nil, err
		}
		got = append(got, lp)
	}
	s := &setup{directClient: got[0], directServer: got[1], meshClient: got[2], meshServer: got[3]}
	tcp, http, mcp := "tcp", "http", "agentmesh.io/mcp"
	svcPort := func(name string, p int32, proto *string) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP, AppProtocol: proto}
	}
	for _, svc := range []struct {
		name  string
		vip   *netip.Addr
		ports []corev1.ServicePort
	}{
		{l4Service, &s.l4VIP, []corev1.ServicePort{svcPort("tcp", port, &tcp)}},
		{l7Service, &s.l7VIP, []corev1.ServicePort{svcPort("http", port, &http), svcPort("mcp", mcpPort, &mcp)}},
	} {
		created, err := l.CreateService(ctx, meshNS, svc.name, map[string]string{"app": serverApp}, svc.ports...)
		if err != nil {
			return nil, err
		}
		if *svc.vip, err = netip.ParseAddr(created.Spec.ClusterIP); err != nil {
			return nil, fmt.Errorf("service %s cluster ip %q: %w", svc.name, created.Spec.ClusterIP, err)
		}
		if err := benchkube.WaitEndpoint(ctx, l, meshNS+"/"+svc.name, s.meshServer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// benchPod is pod ns/name on node running bench-l7-server as service
// account "bench-<name>", Ready once it listens. Client pods run it too
// (unused): a pod needs a process.
func benchPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	c := corev1.Container{Name: "bench", Image: "meshlab",
		Command: []string{"meshlab", ServerCommand, "--listen", ":" + strconv.Itoa(port)},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "bench-" + name, Containers: []corev1.Container{c}}}
}

var policyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}

// applyPolicy lets the mesh client POST to the echo path and call the MCP
// tool, nothing else, and waits until the server's ztunnel refuses a GET.
func applyPolicy(ctx context.Context, l *lab.Lab, o Options, s *setup) error {
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	from := []any{map[string]any{"serviceAccounts": []any{clientSA}}}
	pol := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
		"metadata": map[string]any{"name": policyName, "namespace": meshNS},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"app": serverApp}},
			"action":      "Allow",
			"rules": []any{
				map[string]any{"from": from, "http": map[string]any{"methods": []any{"POST"}, "paths": []any{EchoPath}}},
				map[string]any{"from": from, "mcp": map[string]any{"tools": []any{MCPTool}}},
			},
		},
	}}
	if _, err := dyn.Resource(policyGVR).Namespace(meshNS).Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy: %w", err)
	}
	echo, _ := s.urls(L7Policy)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	last := ""
	for {
		out, err := s.meshClient.Run(wctx, o.meshlab(), "app", "http-do", "--method", "GET", "--url", echo)
		var r struct {
			Status int `json:"status"`
		}
		if err == nil && json.Unmarshal(out, &r) == nil && r.Status == 403 {
			return nil
		}
		last = fmt.Sprintf("%s %v", strings.TrimSpace(string(out)), err)
		select {
		case <-wctx.Done():
			return fmt.Errorf("policy %s/%s not in force on n2 (a GET is not refused): %s", meshNS, policyName, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Bounds of one client run beyond its own duration.
const (
	grace = 2 * time.Second  // late answers after the last send
	slack = 30 * time.Second // process start and exit on a busy machine
)

// measureRow warms up, then measures the row's HTTP latency and its MCP
// call rate, each with what the tunnels spent and counted, and checks
// that the traffic went as the row says.
func measureRow(ctx context.Context, l *lab.Lab, o Options, s *setup, k Kind) (r Row) {
	r.Kind = k
	echo, mcpURL := s.urls(k)
	client := s.client(k)
	httpArgs := func(d time.Duration, rate float64) []string {
		return []string{o.meshlab(), ClientCommand, "http", "--url", echo, "--rate", strconv.FormatFloat(rate, 'f', -1, 64),
			"--conns", strconv.Itoa(o.Conns), "--size", strconv.Itoa(o.Size), "--duration", d.String(), "--grace", grace.String()}
	}
	mcpArgs := func(d time.Duration) []string {
		return []string{o.meshlab(), ClientCommand, "mcp", "--url", mcpURL, "--sessions", strconv.Itoa(o.Sessions), "--duration", d.String()}
	}
	// Warm up: certificates, pooled HBONE connections, the server's
	// first MCP session.
	if r.Err = warmUp(ctx, client, httpArgs(300*time.Millisecond, 100), mcpArgs(300*time.Millisecond)); r.Err != nil {
		return r
	}
	r.HTTP, r.Err = measure[HTTPResult](ctx, l, k, client, o.Duration+grace+slack, httpArgs(o.Duration, o.Rate),
		func(h HTTPResult) int { return h.Count })
	if r.Err != nil {
		return r
	}
	if r.HTTP.Result.Errors > 0 {
		r.Err = fmt.Errorf("%d of %d requests failed: %s", r.HTTP.Result.Errors, r.HTTP.Result.Scheduled, r.HTTP.Result.FirstError)
		return r
	}
	r.MCP, r.Err = measure[MCPResult](ctx, l, k, client, o.MCPDuration+slack, mcpArgs(o.MCPDuration),
		func(m MCPResult) int { return m.Calls })
	if r.Err == nil && r.MCP.Result.Errors > 0 {
		r.Err = fmt.Errorf("%d MCP calls failed: %s", r.MCP.Result.Errors, r.MCP.Result.FirstError)
	}
	return r
}

// warmUp runs short HTTP and MCP runs until both go without an error.
func warmUp(ctx context.Context, client *lab.Pod, httpArgs, mcpArgs []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var h HTTPResult
		var m MCPResult
		err := benchkube.RunJSON(ctx, client, slack, &h, httpArgs...)
		if err == nil && (h.Errors > 0 || h.Count == 0) {
			err = fmt.Errorf("http: %d of %d failed: %s", h.Errors, h.Scheduled, h.FirstError)
		}
		if err == nil {
			err = benchkube.RunJSON(ctx, client, slack, &m, mcpArgs...)
		}
		if err == nil && (m.Errors > 0 || m.Calls == 0) {
			err = fmt.Errorf("mcp: %d calls, %d failed: %s", m.Calls, m.Errors, m.FirstError)
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm up: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// measure runs args in client, with the ztunnels' CPU time and request
// counts before and after, and checks that the requests went the row's
// way: per request in the source tunnel for the L7 rows (and in the
// destination's too under the policy), as bytes for L4.
func measure[T any](ctx context.Context, l *lab.Lab, k Kind, client *lab.Pod, limit time.Duration, args []string, answered func(T) int) (run Run[T], err error) {
	var pids []int
	if k != Direct {
		for _, n := range []int{1, 2} {
			p := l.Daemon(n, "ztunnel")
			if p == nil {
				return run, fmt.Errorf("n%d has no ztunnel running", n)
			}
			pids = append(pids, p.PID)
		}
	}
	src0, dst0, err := requestCounts(ctx, l, k)
	if err != nil {
		return run, err
	}
	cpu0, err := cpuOf(pids)
	if err != nil {
		return run, err
	}
	if err := benchkube.RunJSON(ctx, client, limit, &run.Result, args...); err != nil {
		return run, err
	}
	n := answered(run.Result)
	if k != Direct {
		cpu1, err := cpuOf(pids)
		if err != nil {
			return run, err
		}
		run.Cost = &Cost{}
		if n > 0 {
			run.Cost.CPUPer1000 = (cpu1 - cpu0) * 1000 / time.Duration(n)
		}
		for _, pid := range pids {
			st, err := lab.ReadProcStats(pid)
			if err != nil {
				return run, err
			}
			run.Cost.RSS += st.RSS
		}
	}
	src1, dst1, err := requestCounts(ctx, l, k)
	if err != nil {
		return run, err
	}
	run.Src, run.Dst = src1-src0, dst1-dst0
	switch {
	case k == L4 && run.Src+run.Dst != 0:
		return run, fmt.Errorf("the tunnels counted %v+%v requests on a port declared tcp: want bytes carried as they are", run.Src, run.Dst)
	case (k == L7 || k == L7Policy) && run.Src < float64(n):
		return run, fmt.Errorf("n1's ztunnel counted %v requests, the client had %d answered: not proxied per request", run.Src, n)
	case k == L7Policy && run.Dst < float64(n):
		return run, fmt.Errorf("n2's ztunnel counted %v requests, the client had %d answered: not decided per request", run.Dst, n)
	}
	return run, nil
}

// requestCounts sums agentmesh_requests_total in n1's ztunnel (reporter
// source) and n2's (reporter destination); zeros for direct.
func requestCounts(ctx context.Context, l *lab.Lab, k Kind) (src, dst float64, err error) {
	if k == Direct {
		return 0, 0, nil
	}
	for node, reporter := range map[int]string{1: "source", 2: "destination"} {
		series, err := l.ZtunnelSeries(ctx, node, "agentmesh_requests_total")
		if err != nil {
			return 0, 0, fmt.Errorf("n%d's request counts: %w", node, err)
		}
		var sum float64
		for labels, v := range series {
			if strings.Contains(labels, `reporter="`+reporter+`"`) && strings.Contains(labels, `destination_namespace="`+meshNS+`"`) {
				sum += v
			}
		}
		if node == 1 {
			src = sum
		} else {
			dst = sum
		}
	}
	return src, dst, nil
}

func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		d, err := lab.ReadCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}
