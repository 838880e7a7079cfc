package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/agentmesh/agentmesh/test/bench/balance"
	"github.com/agentmesh/agentmesh/test/bench/controlplane"
	"github.com/agentmesh/agentmesh/test/bench/l7"
	policybench "github.com/agentmesh/agentmesh/test/bench/policy"
	"github.com/agentmesh/agentmesh/test/bench/scale"
	"github.com/agentmesh/agentmesh/test/bench/services"
)

// controlPlaneFlags select the benchmarks and size the control-plane,
// policy and services ones.
type controlPlaneFlags struct {
	dataPath, controlPlane, policy, services, l7, balance bool
	cp                                                    controlplane.Options
	pol                                                   policybench.Options
	svc                                                   services.Options
	l7o                                                   l7.Options
	bal                                                   balance.Options
	scalePods                                             int
}

// register adds --data-path, --control-plane and the --cp-* sizes to fs.
func (f *controlPlaneFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.dataPath, "data-path", true, "benchmark the data path on a two-node lab (needs root)")
	fs.BoolVar(&f.controlPlane, "control-plane", true, "then benchmark the controller on a real Kubernetes control plane (needs bin/controller and bin/kube)")
	fs.IntVar(&f.cp.Nodes, "cp-nodes", 10, "control plane: nodes, one config stream each")
	fs.IntVar(&f.cp.Namespaces, "cp-namespaces", 5, "control plane: mesh-enabled namespaces")
	fs.IntVar(&f.cp.Services, "cp-services", 100, "control plane: services")
	fs.IntVar(&f.cp.Pods, "cp-pods", 2000, "control plane: pods")
	fs.IntVar(&f.cp.Changes, "cp-changes", 20, "control plane: service changes to time")
	fs.DurationVar(&f.cp.Debounce, "cp-debounce", 0, "control plane: the controller's --debounce (0: its default)")
	fs.StringVar(&f.cp.ProfileDir, "cp-profile", "", "control plane: write the controller's CPU profile of the whole run and its allocation profile into this directory (go tool pprof bin/controller DIR/controller.cpu.prof)")
	fs.BoolVar(&f.policy, "policy", true, "then time AgentPolicy apply -> enforcement on every node of a Kubernetes-mode lab (needs root and bin/kube)")
	fs.IntVar(&f.pol.Nodes, "policy-nodes", 3, "policy: lab nodes, one target pod each")
	fs.IntVar(&f.pol.Rounds, "policy-rounds", 10, "policy: apply+delete rounds")
	fs.BoolVar(&f.services, "services", true, "then compare a Service VIP with pod IP and direct on a Kubernetes-mode lab: new connections/s and echo latency (needs root and bin/kube; latency sized by --rate, --conns, --size, --duration)")
	fs.DurationVar(&f.svc.ConnectDuration, "svc-connect-duration", 5*time.Second, "services: how long each row opens new connections")
	fs.IntVar(&f.svc.Concurrency, "svc-concurrency", 8, "services: new connections in flight at once")
	fs.BoolVar(&f.l7, "l7", true, "then compare HTTP keep-alive request latency and MCP tools/call rate direct vs mesh L4 vs mesh L7 (per request) vs mesh L7 with an L7 AgentPolicy, with ztunnel CPU per 1000 requests and RSS, on a Kubernetes-mode lab (needs root and bin/kube; HTTP sized by --rate, --conns, --size, --duration)")
	fs.IntVar(&f.l7o.Sessions, "l7-mcp-sessions", 4, "l7: MCP sessions calling tools/call back to back")
	fs.DurationVar(&f.l7o.MCPDuration, "l7-mcp-duration", 5*time.Second, "l7: how long each row calls MCP tools")
	fs.BoolVar(&f.balance, "balance", true, "then compare how requests spread over three replicas, one of them slow: direct (a replica at random per request) vs the mesh's round robin vs its peak-EWMA, on a Kubernetes-mode lab (needs root and bin/kube)")
	fs.IntVar(&f.bal.Requests, "balance-requests", 600, "balance: requests per row, one after the other")
	fs.DurationVar(&f.bal.Fast, "balance-fast", 2*time.Millisecond, "balance: the fast replicas' answer delay")
	fs.DurationVar(&f.bal.Slow, "balance-slow", 40*time.Millisecond, "balance: the slow replica's answer delay")
	fs.IntVar(&f.scalePods, "scale", 0, "then enroll this many pods without apps on a one-node standalone lab and report enrollment time, ztunnel and agentd RSS, fds and goroutines per pod, and the time a restarted ztunnel takes to list them all again (needs root; 0: skip)")
}

// runScale runs the scale benchmark and prints its table, also what it
// measured before failing.
func runScale(ctx context.Context, o Options, stdout io.Writer) error {
	load := loadAverage()
	r, err := scale.Measure(ctx, scale.Options{BinDir: o.BinDir, Pods: o.cpFlags.scalePods, Logger: o.Logger})
	if r != nil {
		fmt.Fprintln(stdout)
		scale.WriteTable(stdout, r)
		fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
			runtime.NumCPU(), load, loadAverage())
	}
	if err != nil {
		return fmt.Errorf("scale bench: %w", err)
	}
	return nil
}

// runBalance runs the balancing benchmark and prints its table, also
// what it measured before failing.
func runBalance(ctx context.Context, o Options, stdout io.Writer) error {
	bo := o.cpFlags.bal
	bo.BinDir, bo.Logger = o.BinDir, o.Logger
	load := loadAverage()
	r, err := balance.Measure(ctx, bo)
	if r != nil {
		fmt.Fprintln(stdout)
		balance.WriteTable(stdout, r)
		fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
			runtime.NumCPU(), load, loadAverage())
	}
	if err != nil {
		return fmt.Errorf("balance bench: %w", err)
	}
	return nil
}

// runL7 runs the L7 benchmark and prints its tables, also what it
// measured before failing.
func runL7(ctx context.Context, o Options, stdout io.Writer) error {
	lo := o.cpFlags.l7o
	lo.BinDir, lo.Logger = o.BinDir, o.Logger
	lo.Duration, lo.Rate, lo.Conns, lo.Size = o.Duration, o.Rate, o.Conns, o.Size
	load := loadAverage()
	r, err := l7.Measure(ctx, lo)
	if r != nil {
		fmt.Fprintln(stdout)
		l7.WriteTable(stdout, r)
		fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
			runtime.NumCPU(), load, loadAverage())
	}
	if err != nil {
		return fmt.Errorf("l7 bench: %w", err)
	}
	return nil
}

// runServices runs the services benchmark and prints its table, also
// what it measured before failing.
func runServices(ctx context.Context, o Options, stdout io.Writer) error {
	so := o.cpFlags.svc
	so.BinDir, so.Logger = o.BinDir, o.Logger
	so.Duration, so.Rate, so.Conns, so.Size = o.Duration, o.Rate, o.Conns, o.Size
	load := loadAverage()
	r, err := services.Measure(ctx, so)
	if r != nil {
		fmt.Fprintln(stdout)
		services.WriteTable(stdout, r)
		fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
			runtime.NumCPU(), load, loadAverage())
	}
	if err != nil {
		return fmt.Errorf("services bench: %w", err)
	}
	return nil
}

// runPolicy runs the policy benchmark and prints its table.
func runPolicy(ctx context.Context, o Options, stdout io.Writer) error {
	po := o.cpFlags.pol
	po.BinDir, po.Logger = o.BinDir, o.Logger
	load := loadAverage()
	r, err := policybench.Measure(ctx, po)
	if err != nil {
		return fmt.Errorf("policy bench: %w", err)
	}
	fmt.Fprintln(stdout)
	policybench.WriteTable(stdout, r)
	fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
		runtime.NumCPU(), load, loadAverage())
	return nil
}

// runControlPlane runs the control-plane benchmark and prints its table.
func runControlPlane(ctx context.Context, o Options, stdout io.Writer) error {
	cp := o.cpFlags.cp
	cp.BinDir, cp.Logger = o.BinDir, o.Logger
	load := loadAverage()
	r, err := controlplane.Measure(ctx, cp)
	if err != nil {
		return fmt.Errorf("control plane bench: %w", err)
	}
	fmt.Fprintln(stdout)
	controlplane.WriteTable(stdout, r)
	fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
		runtime.NumCPU(), load, loadAverage())
	return nil
}
