package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// Ports the benchmark servers listen on inside their pods.
const (
	EchoPort = 9000
	SinkPort = 9001
)

// Scenario is one client/server placement.
type Scenario struct {
	Name       string
	ClientNode int
	ServerNode int
	Mesh       bool // both pods enrolled
	// HAProxy puts the HAProxy mTLS pair (haproxy.go) between the pods,
	// which are outside the mesh: what a user would set up instead.
	HAProxy bool
	// Baseline names the direct scenario a mesh or HAProxy scenario is
	// compared with.
	Baseline string
}

// Scenarios are measured in this order on one two-node lab. Each mesh
// placement has a direct twin with the same placement, so a ratio compares
// like with like.
var Scenarios = []Scenario{
	{Name: "direct cross-node", ClientNode: 1, ServerNode: 2},
	{Name: "direct same-node", ClientNode: 1, ServerNode: 1},
	{Name: "mesh cross-node", ClientNode: 1, ServerNode: 2, Mesh: true, Baseline: "direct cross-node"},
	{Name: "mesh same-node", ClientNode: 1, ServerNode: 1, Mesh: true, Baseline: "direct same-node"},
	{Name: "haproxy cross-node", ClientNode: 1, ServerNode: 2, HAProxy: true, Baseline: "direct cross-node"},
}

// Result is what one scenario measured. Err is set when the scenario could
// not be measured (its numbers are then incomplete).
type Result struct {
	Scenario Scenario
	Latency  Summary
	Bulk     BulkResult
	Idle     IdleMemory // zero unless Options.IdleConns > 0
	// Cost is what the proxies spent, for proxied scenarios (nil for
	// direct ones).
	Cost *ProxyCost
	Path string // how the traffic went: "direct", "hbone+mtls", ...
	Err  error
}

// Measure builds a two-node lab with the mesh running, measures every
// scenario in Scenarios (in order, one at a time) and removes the lab. It returns the results it got
// and an error if the lab failed or any scenario did.
func Measure(ctx context.Context, opts Options) (results []Result, err error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	binDir, err := filepath.Abs(opts.BinDir)
	if err != nil {
		return nil, fmt.Errorf("bench: bin dir: %w", err)
	}
	opts.BinDir = binDir
	scenarios := opts.scenarios
	if scenarios == nil {
		scenarios = Scenarios
	}
	startMesh := slices.ContainsFunc(scenarios, func(s Scenario) bool { return s.Mesh })
	if opts.ProfileDir != "" {
		if opts.ProfileDir, err = filepath.Abs(opts.ProfileDir); err != nil {
			return nil, fmt.Errorf("bench: profile dir: %w", err)
		}
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: profile dir: %w", err)
		}
	}
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: binDir, Logger: opts.Logger, StartMesh: startMesh, ProfileDir: opts.ProfileDir, AgentdArgs: opts.AgentdArgs,
		ZtunnelArgs: []string{"--same-node-fast-path=" + strconv.FormatBool(opts.SameNodeFastPath)}})
	if err != nil {
		return nil, fmt.Errorf("bench: build lab: %w", err)
	}
	defer func() { err = errors.Join(err, closeLab(l)) }()
	var errs []error
	for _, sc := range scenarios {
		r := measureScenario(ctx, l, opts, sc)
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sc.Name, r.Err))
		}
		results = append(results, r)
	}
	return results, errors.Join(errs...)
}

func closeLab(l *lab.Lab) error {
	if err := l.Close(); err != nil {
		return fmt.Errorf("bench: close lab: %w", err)
	}
	return nil
}

// measureScenario adds the scenario's two pods, starts the servers, warms
// up, measures latency and then throughput, checks the path and removes
// the pods again.
func measureScenario(ctx context.Context, l *lab.Lab, opts Options, sc Scenario) (r Result) {
	r.Scenario = sc
	opts.Logger.Info("measuring", "scenario", sc.Name)
	client, server, err := addPods(ctx, l, sc)
	if err != nil {
		r.Err = err
		return r
	}
	defer func() {
		r.Err = errors.Join(r.Err, l.RemovePod(ctx, client.Name), l.RemovePod(ctx, server.Name))
	}()
	addr := podAddr(server, opts.IPv6)
	echoProc, err := startServers(ctx, server, opts)
	if err != nil {
		r.Err = err
		return r
	}
	echo, sink := netip.AddrPortFrom(addr, EchoPort), netip.AddrPortFrom(addr, SinkPort)
	var haproxy []*lab.Process
	if sc.HAProxy {
		if echo, sink, haproxy, err = startHAProxy(ctx, l, client, server, addr); err != nil {
			r.Err = err
			return r
		}
	}
	procs, cs, err := carriers(l, sc, haproxy)
	if err != nil {
		r.Err = err
		return r
	}
	if err := warmUp(ctx, l, sc, client, opts, echo, sink); err != nil {
		r.Err = err
		return r
	}
	since := time.Now()
	if r.Latency, err = runLatencyIn(ctx, client, opts, echo, opts.Duration, opts.Rate); err != nil {
		r.Err = err
		return r
	}
	var cpuPerGB float64
	if r.Bulk, cpuPerGB, err = bulkWithCPU(ctx, client, opts, sink, cs); err != nil {
		r.Err = err
		return r
	}
	if len(cs) > 0 {
		r.Cost = &ProxyCost{Procs: procs, CPUPerGB: cpuPerGB, LoadRate: loadRate}
		if r.Cost.LoadRSS, err = loadRSS(ctx, client, opts, echo, cs); err != nil {
			r.Err = err
			return r
		}
	}
	if sc.HAProxy {
		// Between the pods the traffic went to the server's HAProxy,
		// not through a ztunnel.
		wire := []netip.AddrPort{netip.AddrPortFrom(addr, haproxyEchoPort), netip.AddrPortFrom(addr, haproxySinkPort)}
		if r.Err = checkNotProxied(l, wire); r.Err == nil {
			r.Path = "haproxy+mtls"
		}
	} else {
		r.Path, r.Err = checkPath(ctx, l, sc, since, opts.Conns+1, echo, sink)
	}
	if r.Err == nil && opts.IdleConns > 0 && !sc.HAProxy {
		r.Idle, r.Err = measureIdle(ctx, l, sc, opts, client, echoProc, echo)
	}
	return r
}

// addPods adds the client and server pods of sc, in their own namespace
// and service accounts.
func addPods(ctx context.Context, l *lab.Lab, sc Scenario) (client, server *lab.Pod, err error) {
	prefix := "bench-direct"
	switch {
	case sc.Mesh:
		prefix = "bench-mesh"
	case sc.HAProxy:
		prefix = "bench-haproxy"
	}
	suffix := "-" + strconv.Itoa(sc.ClientNode) + strconv.Itoa(sc.ServerNode)
	client, err = l.AddPod(ctx, lab.PodSpec{Name: prefix + "-client" + suffix, Namespace: "bench",
		ServiceAccount: "bench-client", Node: sc.ClientNode, Enrolled: sc.Mesh})
	if err != nil {
		return nil, nil, fmt.Errorf("add client pod: %w", err)
	}
	server, err = l.AddPod(ctx, lab.PodSpec{Name: prefix + "-server" + suffix, Namespace: "bench",
		ServiceAccount: "bench-server", Node: sc.ServerNode, Enrolled: sc.Mesh})
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("add server pod: %w", err), l.RemovePod(ctx, client.Name))
	}
	return client, server, nil
}

func podAddr(p *lab.Pod, ipv6 bool) netip.Addr {
	if ipv6 {
		return p.IPv6()
	}
	return p.IPv4()
}

// startServers runs the echo and the sink in the server pod; they stop
// when the pod is removed. It returns the echo server's process.
func startServers(ctx context.Context, server *lab.Pod, opts Options) (*lab.Process, error) {
	echo, err := server.Start(ctx, "bench-echo", opts.command(ServerCommand, "--listen", ":"+strconv.Itoa(EchoPort))...)
	if err != nil {
		return nil, fmt.Errorf("start echo server: %w", err)
	}
	sink := opts.command(ServerCommand, "--listen", ":"+strconv.Itoa(SinkPort), "--discard")
	if _, err := server.Start(ctx, "bench-sink", sink...); err != nil {
		return nil, fmt.Errorf("start sink server: %w", err)
	}
	return echo, nil
}
