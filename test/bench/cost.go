package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// ProxyCost is what the processes carrying a proxied scenario's traffic
// (both ztunnels, or both HAProxies) spent: CPU time per GB of the bulk
// run, and their resident memory under a steady request load.
type ProxyCost struct {
	Procs    string  // "ztunnel n1+n2", "haproxy x2"
	CPUPerGB float64 // CPU seconds, all carrying processes together, per 1e9 bytes moved
	// LoadRate is the request rate of the load phase (LoadRate req/s of
	// opts.Size bytes over opts.Conns connections) and LoadRSS the
	// largest sum of the processes' RSS seen during it, in bytes.
	LoadRate float64
	LoadRSS  int64
}

// loadRate is the request rate of the load phase.
const loadRate = 1000

// loadDuration is how long the load phase runs.
const loadDuration = 3 * time.Second

// carrier is a process that carries a scenario's traffic.
type carrier struct {
	pid int
}

// carriers are the processes that carry sc's traffic: the ztunnels of
// its nodes, or the HAProxy pair.
func carriers(l *lab.Lab, sc Scenario, haproxy []*lab.Process) (string, []carrier, error) {
	switch {
	case sc.HAProxy:
		var cs []carrier
		for _, p := range haproxy {
			cs = append(cs, carrier{p.PID})
		}
		return fmt.Sprintf("haproxy x%d", len(cs)), cs, nil
	case sc.Mesh:
		nodes := []int{sc.ClientNode}
		if sc.ServerNode != sc.ClientNode {
			nodes = append(nodes, sc.ServerNode)
		}
		var cs []carrier
		name := "ztunnel"
		for i, n := range nodes {
			p := l.Daemon(n, "ztunnel")
			if p == nil {
				return "", nil, fmt.Errorf("n%d has no ztunnel running", n)
			}
			cs = append(cs, carrier{p.PID})
			sep := " "
			if i > 0 {
				sep = "+"
			}
			name += fmt.Sprintf("%sn%d", sep, n)
		}
		return name, cs, nil
	}
	return "", nil, nil
}

// cpuOf sums the CPU time of cs so far.
func cpuOf(cs []carrier) (time.Duration, error) {
	var sum time.Duration
	for _, c := range cs {
		d, err := lab.ReadCPU(c.pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// rssOf sums the RSS of cs now.
func rssOf(cs []carrier) (int64, error) {
	var sum int64
	for _, c := range cs {
		st, err := lab.ReadProcStats(c.pid)
		if err != nil {
			return 0, err
		}
		sum += st.RSS
	}
	return sum, nil
}

// bulkWithCPU runs the bulk measurement and the CPU time cs spent on it,
// per GB.
func bulkWithCPU(ctx context.Context, client *lab.Pod, opts Options, sink netip.AddrPort, cs []carrier) (BulkResult, float64, error) {
	before, err := cpuOf(cs)
	if err != nil {
		return BulkResult{}, 0, err
	}
	b, err := runBulkIn(ctx, client, opts, sink)
	if err != nil {
		return b, 0, err
	}
	after, err := cpuOf(cs)
	if err != nil || b.Bytes == 0 {
		return b, 0, err
	}
	return b, (after - before).Seconds() / (float64(b.Bytes) / 1e9), nil
}

// loadRSS runs loadRate req/s at echo for loadDuration and returns the
// largest summed RSS of cs sampled meanwhile.
func loadRSS(ctx context.Context, client *lab.Pod, opts Options, echo netip.AddrPort, cs []carrier) (int64, error) {
	var (
		mu      sync.Mutex
		peak    int64
		readErr error
	)
	sample := func() {
		rss, err := rssOf(cs)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			readErr = err
		}
		peak = max(peak, rss)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	})
	s, err := runLatencyIn(ctx, client, opts, echo, loadDuration, loadRate)
	close(stop)
	wg.Wait()
	sample()
	if err == nil && s.Errors > 0 {
		err = fmt.Errorf("load phase: %d of %d requests failed", s.Errors, s.Scheduled)
	}
	return peak, errors.Join(err, readErr)
}

// writeCost prints what the proxies of every proxied scenario spent.
func writeCost(w io.Writer, opts Options, results []Result) {
	var rows []Result
	for _, r := range results {
		if r.Cost != nil {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nproxy cost: CPU of the carrying processes over the throughput run, per GB moved; their RSS (summed, largest sample) under %d req/s of %d-byte echoes over %d connections for %v\n",
		loadRate, opts.Size, opts.Conns, loadDuration)
	fmt.Fprintf(w, "%-18s %-16s %12s %22s\n", "scenario", "processes", "cpu(s)/GB", "rss at load (MiB)")
	for _, r := range rows {
		c := r.Cost
		fmt.Fprintf(w, "%-18s %-16s %12s %22s\n", r.Scenario.Name, c.Procs,
			orDash(c.CPUPerGB, c.CPUPerGB > 0), orDash(float64(c.LoadRSS)/(1<<20), c.LoadRSS > 0))
	}
}
