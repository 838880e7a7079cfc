// Package scale measures a node full of enrolled pods: a one-node
// standalone lab, --pods pods without apps (each its netns, veth pair,
// addresses and cgroup, as a CNI and a kubelet would make them), added to
// the mesh in one config write. It reports how long the pods' own network
// setup took (the baseline: what the node does without the mesh), how
// long the mesh took from the config write until ztunnel had every pod set up
// (agentd attaches sk_lookup and hands each netns over, ztunnel opens its
// listeners), ztunnel's and agentd's RSS, fds and goroutines before and
// after (per pod), and how long a restarted ztunnel takes until it has
// every pod set up again (its snapshot from agentd).
package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// Options size the run.
type Options struct {
	BinDir string
	Pods   int
	Logger *slog.Logger
}

// Result is what Measure saw.
type Result struct {
	Pods               int
	Setup, Enroll      time.Duration // pods' networks; config write -> all listed
	Restart            time.Duration // ztunnel start -> all listed again
	ZBefore, ZAfter    lab.ProcStats // ztunnel
	ABefore, AAfter    lab.ProcStats // agentd (goroutines unknown)
	ZRestarted         lab.ProcStats // ztunnel after its restart
	ListedAfterRestart int
	FDBudget, PerPod   int // ztunnel's fd budget; the units a pod takes of it
}

// Measure runs the scale lab.
func Measure(ctx context.Context, o Options) (_ *Result, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := lab.New(ctx, lab.Options{Nodes: 1, BinDir: o.BinDir, StartMesh: true, Logger: o.Logger,
		ReadyTimeout: 15 * time.Minute})
	if err != nil {
		return nil, fmt.Errorf("scale lab: %w", err)
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	r := &Result{Pods: o.Pods}
	if r.ZBefore, err = l.ZtunnelStats(ctx, 1); err != nil {
		return nil, err
	}
	if r.ABefore, err = lab.ReadProcStats(l.Daemon(1, "agentd").PID); err != nil {
		return nil, err
	}
	// Each pod takes fd budget units of ztunnel's (its netns handle,
	// listeners and DNS sockets); more pods than the budget carries are
	// refused and would never all be listed: say so now.
	m, err := l.ZtunnelMetrics(ctx, 1)
	if err != nil {
		return nil, err
	}
	r.FDBudget, r.PerPod = int(m["ztunnel_proxy_sockets_limit"]), 1+podnet.Sockets()+dnsproxy.Sockets()
	if fit := r.FDBudget / r.PerPod; r.FDBudget > 0 && o.Pods > fit {
		return nil, fmt.Errorf("ztunnel's fd budget here is %d (its open-file limit less a reserve): it carries at most %d pods of %d sockets each, not %d; raise RLIMIT_NOFILE (the hard limit needs CAP_SYS_RESOURCE) or ask for fewer pods",
			r.FDBudget, fit, r.PerPod, o.Pods)
	}
	specs := make([]lab.PodSpec, o.Pods)
	for i := range specs {
		specs[i] = lab.PodSpec{Name: fmt.Sprintf("s%05d", i), Namespace: "scale", ServiceAccount: "scale", Node: 1, Enrolled: true}
	}
	added, err := l.AddPods(ctx, specs)
	start := time.Now() // AddPods waited until every pod was listed
	if err != nil {
		return nil, err
	}
	r.Setup = added.Setup
	if err := waitReady(ctx, l, o.Pods); err != nil {
		return r, err
	}
	r.Enroll = added.Mesh + time.Since(start)
	if r.ZAfter, err = l.ZtunnelStats(ctx, 1); err != nil {
		return r, err
	}
	if r.AAfter, err = lab.ReadProcStats(l.Daemon(1, "agentd").PID); err != nil {
		return r, err
	}
	if err := l.StopZtunnel(ctx, 1); err != nil {
		return r, err
	}
	start = time.Now()
	if err := l.StartZtunnel(ctx, 1); err != nil {
		return r, err
	}
	if err := waitReady(ctx, l, o.Pods); err != nil {
		return r, fmt.Errorf("restarted ztunnel: %w", err)
	}
	r.Restart = time.Since(start)
	r.ZRestarted, err = l.ZtunnelStats(ctx, 1)
	return r, err
}

// waitReady waits, 15 minutes at most, until ztunnel has n pods set up
// (state ready).
func waitReady(ctx context.Context, l *lab.Lab, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	for {
		states, err := l.ZtunnelPodStates(ctx, 1)
		if err == nil && states["ready"] >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ztunnel has %v of %d pods (last error: %v): %w", states, n, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WriteTable prints r.
func WriteTable(w io.Writer, r *Result) {
	fmt.Fprintf(w, "scale: one node, %d enrolled pods without apps, added in one config write\n", r.Pods)
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000/float64(r.Pods))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\ttotal\tper pod")
	fmt.Fprintf(tw, "pods' network setup (baseline, no mesh)\t%s\t%s\n", r.Setup.Round(time.Millisecond), per(r.Setup))
	fmt.Fprintf(tw, "mesh enrollment (config write -> all ready in ztunnel)\t%s\t%s\n", r.Enroll.Round(time.Millisecond), per(r.Enroll))
	fmt.Fprintf(tw, "ztunnel restart -> all ready again (snapshot)\t%s\t%s\n", r.Restart.Round(time.Millisecond), per(r.Restart))
	tw.Flush()
	fmt.Fprintf(w, "  enrollment / network setup: x%.2f\n", r.Enroll.Seconds()/r.Setup.Seconds())
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "process\tRSS before\tRSS after\tper pod\tfds before\tfds after\tfds per pod\tgoroutines before\tafter\tper pod")
	row := func(name string, b, a lab.ProcStats) {
		g := func(s lab.ProcStats) string {
			if s.Goros < 0 {
				return "?"
			}
			return fmt.Sprint(s.Goros)
		}
		gper := "?"
		if a.Goros >= 0 && b.Goros >= 0 {
			gper = fmt.Sprintf("%.2f", float64(a.Goros-b.Goros)/float64(r.Pods))
		}
		fmt.Fprintf(tw, "%s\t%.1f MB\t%.1f MB\t%.1f KB\t%d\t%d\t%.2f\t%s\t%s\t%s\n", name, float64(b.RSS)/1e6, float64(a.RSS)/1e6,
			float64(a.RSS-b.RSS)/1e3/float64(r.Pods), b.FDs, a.FDs, float64(a.FDs-b.FDs)/float64(r.Pods), g(b), g(a), gper)
	}
	row("ztunnel", r.ZBefore, r.ZAfter)
	row("agentd", r.ABefore, r.AAfter)
	row("ztunnel, restarted", r.ZBefore, r.ZRestarted)
	tw.Flush()
	if r.FDBudget > 0 {
		fmt.Fprintf(w, "  ztunnel's fd budget %d carries %d pods of %d sockets each (netns handle, listeners, DNS sockets); these %d pods take %.0f%% of it\n",
			r.FDBudget, r.FDBudget/r.PerPod, r.PerPod, r.Pods, 100*float64(r.Pods*r.PerPod)/float64(r.FDBudget))
	}
}
