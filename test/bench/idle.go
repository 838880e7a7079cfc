package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// IdleMemory is what one scenario's idle connections cost per connection,
// on every process that carries them: the two ztunnels of a mesh
// scenario, the server app of a direct one (the baseline: what a
// connection costs the app itself).
type IdleMemory struct {
	Conns int
	Sides []SideMemory
}

// SideMemory is one process's growth per idle connection, in bytes.
type SideMemory struct {
	Name                   string // "ztunnel n1 (source)", "server app"
	RSS, Heap, Stacks, FDs float64
	Goroutines             float64 // -1 unknown
	Back                   string  // after the connections closed: "fds 21 (baseline 21)"
}

// measureIdle opens opts.IdleConns connections from client to echo, has
// each echo one payload, and compares the carrying processes while the
// connections are held with before.
func measureIdle(ctx context.Context, l *lab.Lab, sc Scenario, opts Options, client *lab.Pod, server *lab.Process, echo netip.AddrPort) (IdleMemory, error) {
	m := IdleMemory{Conns: opts.IdleConns}
	probes := idleProbes(l, sc, server)
	before := make([]lab.ProcStats, len(probes))
	for i, p := range probes {
		st, err := p.read(ctx)
		if err != nil {
			return m, err
		}
		before[i] = st
	}
	hold := opts.command(ClientCommand, "hold", "--to", echo.String(), "--conns", strconv.Itoa(opts.IdleConns),
		"--size", strconv.Itoa(opts.Size), "--hold", "2m")
	proc, err := client.Start(ctx, "bench-hold", hold...)
	if err != nil {
		return m, fmt.Errorf("start hold client: %w", err)
	}
	defer proc.Stop()
	if err := waitHeld(ctx, proc, opts.IdleConns); err != nil {
		return m, err
	}
	if err := waitCarried(ctx, l, sc, opts.IdleConns); err != nil {
		return m, err
	}
	during := make([]lab.ProcStats, len(probes))
	for i, p := range probes {
		if during[i], err = p.read(ctx); err != nil {
			return m, err
		}
	}
	if err := proc.Stop(); err != nil {
		return m, fmt.Errorf("stop hold client: %w", err)
	}
	n := float64(opts.IdleConns)
	for i, p := range probes {
		b, d := before[i], during[i]
		side := SideMemory{Name: p.name, RSS: float64(d.RSS-b.RSS) / n, FDs: float64(d.FDs-b.FDs) / n, Goroutines: -1, Heap: -1, Stacks: -1}
		if d.Goros >= 0 {
			side.Goroutines = float64(d.Goros-b.Goros) / n
			side.Heap, side.Stacks = float64(d.Heap-b.Heap)/n, float64(d.Stacks-b.Stacks)/n
		}
		side.Back = backToBaseline(ctx, p, b)
		m.Sides = append(m.Sides, side)
	}
	return m, nil
}

// probe reads one process's stats.
type probe struct {
	name string
	read func(context.Context) (lab.ProcStats, error)
}

func idleProbes(l *lab.Lab, sc Scenario, server *lab.Process) []probe {
	if !sc.Mesh {
		return []probe{{"server app", func(context.Context) (lab.ProcStats, error) { return lab.ReadProcStats(server.PID) }}}
	}
	zt := func(i int, role string) probe {
		return probe{fmt.Sprintf("ztunnel n%d (%s)", i, role), func(ctx context.Context) (lab.ProcStats, error) { return l.ZtunnelStats(ctx, i) }}
	}
	if sc.ClientNode == sc.ServerNode {
		return []probe{zt(sc.ClientNode, "both ends")}
	}
	return []probe{zt(sc.ClientNode, "source"), zt(sc.ServerNode, "destination")}
}

// waitHeld waits for hold's first line: every connection open and echoed.
func waitHeld(ctx context.Context, proc *lab.Process, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		out, _ := proc.Output()
		for line := range strings.SplitSeq(string(out), "\n") {
			var h HoldResult
			if json.Unmarshal([]byte(line), &h) == nil && h.Held == n {
				return nil
			}
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("hold client ended before holding %d connections: %s", n, lastLines(out, 3))
		case <-ctx.Done():
			return fmt.Errorf("hold client did not hold %d connections: %w: %s", n, ctx.Err(), lastLines(out, 3))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitCarried waits until the scenario's ztunnels count the held
// connections (the last stream may still be being set up when the client
// has its echo).
func waitCarried(ctx context.Context, l *lab.Lab, sc Scenario, n int) error {
	if !sc.Mesh {
		return nil
	}
	want := map[int]float64{sc.ClientNode: float64(n)}
	want[sc.ServerNode] += float64(n)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ok := true
		for node, w := range want {
			m, err := l.ZtunnelMetrics(ctx, node)
			if err != nil {
				return err
			}
			carried, known := m["ztunnel_proxy_connections"]
			ok = ok && (!known || carried >= w) // older ztunnels do not count
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ztunnels do not carry the %d held connections: %w", n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// backToBaseline waits (up to 15s) for the process's fds to come back to
// within 5 of before, and says where they ended.
func backToBaseline(ctx context.Context, p probe, before lab.ProcStats) string {
	deadline := time.Now().Add(15 * time.Second)
	start := time.Now()
	for {
		st, err := p.read(ctx)
		if err != nil {
			return "?: " + err.Error()
		}
		// Pipes apart: the relay keeps up to 16 empty ones for reuse
		// after splicing (ztunnel/relay maxIdlePipes).
		if st.FDs-st.Pipes <= before.FDs-before.Pipes+5 && st.Pipes <= before.Pipes+2*16 {
			return fmt.Sprintf("fds %d after %.1fs (before %d)%s", st.FDs, time.Since(start).Seconds(), before.FDs, pipesNote(st, before))
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("fds %d after 15s (before %d)%s", st.FDs, before.FDs, pipesNote(st, before))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pipesNote says how many more pipe fds than before there are, if any.
func pipesNote(st, before lab.ProcStats) string {
	if d := st.Pipes - before.Pipes; d > 0 {
		return fmt.Sprintf(", %d more of them the relay's idle pipes", d)
	}
	return ""
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// writeIdle prints the per-connection memory of every scenario that
// measured it, and each mesh side against the direct app baseline.
func writeIdle(w io.Writer, opts Options, results []Result) {
	var base float64
	rows := 0
	for _, r := range results {
		rows += len(r.Idle.Sides)
		if !r.Scenario.Mesh && len(r.Idle.Sides) > 0 && base == 0 {
			base = r.Idle.Sides[0].RSS
		}
	}
	if rows == 0 {
		return
	}
	fmt.Fprintf(w, "\nmemory per idle connection: %d connections opened, one %d-byte echo each, then held (growth over before, divided by the connections)\n",
		opts.IdleConns, opts.Size)
	fmt.Fprintf(w, "%-18s %-26s %9s %10s %11s %8s %8s  %s\n", "scenario", "process", "rss(KiB)", "heap(KiB)", "stacks(KiB)", "fds", "gorout.", "after close")
	for _, r := range results {
		for _, s := range r.Idle.Sides {
			fmt.Fprintf(w, "%-18s %-26s %9.1f %10s %11s %8.2f %8s  %s\n", r.Scenario.Name, s.Name, s.RSS/1024,
				orDash(s.Heap/1024, s.Heap >= 0), orDash(s.Stacks/1024, s.Stacks >= 0), s.FDs, orDash(s.Goroutines, s.Goroutines >= 0), s.Back)
		}
	}
	if base > 0 {
		fmt.Fprintf(w, "ratios ztunnel/server app, rss per connection:")
		for _, r := range results {
			for _, s := range r.Idle.Sides {
				if r.Scenario.Mesh {
					fmt.Fprintf(w, "  %s %s", s.Name, ratio(s.RSS, base))
				}
			}
		}
		fmt.Fprintln(w)
	}
}

func orDash(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
