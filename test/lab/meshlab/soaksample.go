package meshlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/test/lab"
)

// soakMaps are the pinned maps a soak counts on every node, with the
// column names of the series.
var soakMaps = []struct{ name, column string }{
	{bpf.MapOrigDst, "orig"},         // connect -> ztunnel's lookup; must not accumulate
	{bpf.MapOrigDstCookie, "cookie"}, // connect -> ESTABLISHED
	{bpf.MapListeners, "lst"},        // two per pod address
	{bpf.MapEnrolledNetns, "enr"},    // one per enrolled pod
}

// soakSample is the state of the lab at one moment of a soak.
type soakSample struct {
	at      time.Duration // since the load started
	nodes   []nodeSample  // node i at i-1
	calls   tally         // so far
	streams int           // still running
}

// nodeSample is one node's ztunnel and maps.
type nodeSample struct {
	zt   lab.ProcStats
	maps []int // as soakMaps
	err  error // the sample is incomplete
}

// takeSample reads every node.
func takeSample(ctx context.Context, l *lab.Lab, load *soakLoad, at time.Duration) soakSample {
	s := soakSample{at: at, calls: load.calls(), streams: load.streamsUp()}
	for i := 1; i <= l.Nodes(); i++ {
		var n nodeSample
		n.zt, n.err = l.ZtunnelStats(ctx, i)
		for _, m := range soakMaps {
			c, err := l.MapEntries(i, m.name)
			n.maps = append(n.maps, c)
			n.err = errors.Join(n.err, err)
		}
		s.nodes = append(s.nodes, n)
	}
	return s
}

// ok reports whether every node was read.
func (s soakSample) ok() bool {
	for _, n := range s.nodes {
		if n.err != nil {
			return false
		}
	}
	return true
}

// writeSampleHeader prints the column names of writeSample.
func writeSampleHeader(w io.Writer, nodes int) {
	var sb strings.Builder
	sb.WriteString("    time")
	for i := 1; i <= nodes; i++ {
		fmt.Fprintf(&sb, " | n%d rss(MB)   fds   gor", i)
		for _, m := range soakMaps {
			fmt.Fprintf(&sb, " %6s", m.column)
		}
	}
	sb.WriteString(" |  calls ok  failed  streams")
	fmt.Fprintln(w, sb.String())
}

// writeSample prints one sample as one line.
func writeSample(w io.Writer, s soakSample) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%8s", clock(s.at))
	for i, n := range s.nodes {
		if n.err != nil {
			fmt.Fprintf(&sb, " | n%d: %v", i+1, n.err)
			continue
		}
		fmt.Fprintf(&sb, " | %11.1f %5d %5d", float64(n.zt.RSS)/1e6, n.zt.FDs, n.zt.Goros)
		for _, c := range n.maps {
			fmt.Fprintf(&sb, " %6d", c)
		}
	}
	fmt.Fprintf(&sb, " | %9d %7d %8d", s.calls.ok, s.calls.failed, s.streams)
	fmt.Fprintln(w, sb.String())
}

// clock formats d as m:ss.
func clock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// soakSeries turns the complete samples into the series the growth check
// compares, with their margins.
func soakSeries(samples []soakSample, nodes int) []series {
	var out []series
	add := func(name string, m margin, v func(soakSample) float64) {
		s := series{name: name, margin: m}
		for _, x := range samples {
			s.values = append(s.values, v(x))
		}
		out = append(out, s)
	}
	for i := range nodes {
		node := func(s soakSample) nodeSample { return s.nodes[i] }
		prefix := fmt.Sprintf("n%d ", i+1)
		add(prefix+"ztunnel goroutines", margin{abs: 20, rel: 0.1}, func(s soakSample) float64 { return float64(node(s).zt.Goros) })
		add(prefix+"ztunnel fds", margin{abs: 20, rel: 0.1}, func(s soakSample) float64 { return float64(node(s).zt.FDs) })
		add(prefix+"ztunnel rss (MB)", margin{abs: 16, rel: 0.25}, func(s soakSample) float64 { return float64(node(s).zt.RSS) / 1e6 })
		for k, m := range soakMaps {
			mg := margin{abs: 16}
			if m.name == bpf.MapListeners || m.name == bpf.MapEnrolledNetns {
				mg = margin{abs: 2} // pods come and go one at a time
			}
			add(prefix+m.name+" entries", mg, func(s soakSample) float64 { return float64(node(s).maps[k]) })
		}
	}
	return out
}
