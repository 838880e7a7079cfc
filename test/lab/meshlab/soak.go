package meshlab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// soakEchoPort is where the soak's echo servers listen.
const soakEchoPort = 8080

// soakOptions are `meshlab soak`'s flags.
type soakOptions struct {
	binDir       string
	verbose      bool
	duration     time.Duration // of the load
	sample       time.Duration // between samples
	warmup       time.Duration // samples not compared
	certLifetime time.Duration
	dialInterval time.Duration // of the cross-node dialer; the others dial 4 times slower
	streams      int
	burstEvery   time.Duration // 0: no bursts
	burstConns   int
	churnEvery   time.Duration // 0: no pods added and removed
	maxFailed    int           // calls that may fail
}

func parseSoakFlags(args []string) (soakOptions, error) {
	var o soakOptions
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin-dir", defaultBinDir(), "directory with agentd, ztunnel and meshlab")
	fs.BoolVar(&o.verbose, "v", false, "log the lab's steps")
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long the load runs")
	fs.DurationVar(&o.sample, "sample", 10*time.Second, "time between samples")
	fs.DurationVar(&o.warmup, "warmup", 0, "samples in the first warmup are printed, not compared (default: a sixth of the duration, at least 3 samples, at most 5m)")
	fs.DurationVar(&o.certLifetime, "cert-lifetime", 10*time.Minute, "workload certificate lifetime (renewed at half life, under the load)")
	fs.DurationVar(&o.dialInterval, "dial-interval", 50*time.Millisecond, "a new cross-node mesh connection this often (same-node and plaintext ones 4 times less often)")
	fs.IntVar(&o.streams, "streams", 3, "long streams (cross-node IPv4 and IPv6, same-node, by turns)")
	fs.DurationVar(&o.burstEvery, "burst-every", time.Minute, "a burst this often (0: none)")
	fs.IntVar(&o.burstConns, "burst-conns", 500, "connections per burst, opened at once and held 2s")
	fs.DurationVar(&o.churnEvery, "churn-every", time.Minute, "add a pod, call it and remove it this often (0: never)")
	fs.IntVar(&o.maxFailed, "max-failed", 0, "calls that may fail before the soak fails")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if o.warmup == 0 {
		o.warmup = min(max(o.duration/6, 3*o.sample), 5*time.Minute)
	}
	if fs.NArg() > 0 || o.sample <= 0 || o.dialInterval <= 0 || o.streams < 0 || o.burstConns < 1 || o.burstEvery < 0 || o.churnEvery < 0 {
		return o, fmt.Errorf("%w: soak: bad flags %q", ErrUsage, args)
	}
	if _, err := compareWindows(int(o.duration/o.sample)+1, int((o.warmup+o.sample-1)/o.sample)); err != nil {
		return o, fmt.Errorf("%w: soak: --duration %s with --sample %s and --warmup %s: %w", ErrUsage, o.duration, o.sample, o.warmup, err)
	}
	return o, nil
}

// runSoak is `meshlab soak`: a steady mixed load on a two-node lab
// (standalone mode) for --duration. Pods: client (n1) calls server (n2)
// and local (n1), all three enrolled; outside (n1) is not. The load: a
// dialer in client making a new short echo connection to server every
// --dial-interval and one to local 4 times less often, a dialer in
// outside calling server in plaintext (ztunnel's 15006) as often, and
// --streams long streams; every --burst-every a burst of --burst-conns
// connections held 2s, and every --churn-every a pod added, called once
// and removed (every ztunnel's config and agentd's enrolment change).
// Certificates live --cert-lifetime and are renewed at half life.
//
// A sample every --sample reads each node's ztunnel (RSS, fds,
// goroutines) and counts the entries of its pinned eBPF maps; it is
// printed as one line. Bursts and pod churn run between samples, never
// during one. At the end each figure's median over an early window
// (right after --warmup) is compared with its median over a late window
// (the last samples), each a quarter of the samples after the warm-up:
// the late one may exceed the early one by a margin (soakSeries), so
// that noise and the odd sample after a burst do not fail the soak but a
// steady leak does. The soak fails when a figure grew beyond its margin,
// when more than --max-failed calls failed, a stream broke, or agentd or
// ztunnel restarted.
func runSoak(ctx context.Context, args []string, stdout io.Writer) (err error) {
	opts, err := parseSoakFlags(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, cgroups, eBPF): run it with sudo")
	}
	bin, err := filepath.Abs(opts.binDir)
	if err != nil {
		return fmt.Errorf("bin dir: %w", err)
	}
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: bin, Logger: newLogger(opts.verbose),
		StartMesh: true, CertLifetime: opts.certLifetime})
	if err != nil {
		return err
	}
	defer func() { err = closeLab(l, stdout, err) }()
	pods, err := addSoakPods(ctx, l)
	if err != nil {
		return err
	}
	load, err := startSoakLoad(ctx, l, pods, opts)
	stopped := false
	defer func() {
		if !stopped {
			load.stop()
		}
	}()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "soak: lab %s, 2 nodes; %s of load, a sample every %s, the first %s a warm-up\n", l.ID(), opts.duration, opts.sample, opts.warmup)
	fmt.Fprintf(stdout, "load: a new connection every %s n1->n2 and every %s n1->n1 (mesh) and outside->n2 (plaintext); %d streams; a burst of %d every %s; a pod added and removed every %s\n\n",
		opts.dialInterval, 4*opts.dialInterval, opts.streams, opts.burstConns, opts.burstEvery, opts.churnEvery)
	samples := soakLoop(ctx, l, load, opts, stdout)
	broken := load.stop()
	stopped = true
	return soakVerdict(stdout, l, load, samples, broken, ctx.Err())
}

// addSoakPods adds the soak's pods with an echo server in each.
func addSoakPods(ctx context.Context, l *lab.Lab) (soakPods, error) {
	var ps soakPods
	for _, spec := range []struct {
		p        **lab.Pod
		name     string
		node     int
		enrolled bool
	}{{&ps.client, "client", 1, true}, {&ps.server, "server", 2, true}, {&ps.local, "local", 1, true}, {&ps.outside, "outside", 1, false}} {
		p, err := l.AddPod(ctx, lab.PodSpec{Name: spec.name, Namespace: "soak", ServiceAccount: spec.name, Node: spec.node, Enrolled: spec.enrolled})
		if err != nil {
			return ps, err
		}
		if err := startEchoIn(ctx, l, p); err != nil {
			return ps, err
		}
		*spec.p = p
	}
	// The echo servers are up when the client reaches them.
	load := &soakLoad{l: l, pods: ps}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range []*lab.Pod{ps.server, ps.local} {
		if err := load.sendUntil(ctx, addrOf(p)); err != nil {
			return ps, fmt.Errorf("echo server in %s: %w", p.Name, err)
		}
	}
	return ps, nil
}

// soakLoop samples every opts.sample until the duration is over or ctx
// ends; between samples it runs the bursts and the pod churn, so that no
// sample is taken during either.
func soakLoop(ctx context.Context, l *lab.Lab, load *soakLoad, opts soakOptions, stdout io.Writer) []soakSample {
	writeSampleHeader(stdout, l.Nodes())
	start := time.Now()
	// The first churn and burst fall in the warm-up.
	nextChurn, nextBurst := start.Add(opts.sample), start.Add(2*opts.sample)
	tick := time.NewTicker(opts.sample)
	defer tick.Stop()
	var samples []soakSample
	for {
		s := takeSample(ctx, l, load, time.Since(start))
		writeSample(stdout, s)
		samples = append(samples, s)
		if s.at >= opts.duration {
			return samples
		}
		if now := time.Now(); opts.churnEvery > 0 && !now.Before(nextChurn) {
			load.churnPod(ctx)
			nextChurn = nextChurn.Add(opts.churnEvery)
		}
		if now := time.Now(); opts.burstEvery > 0 && !now.Before(nextBurst) {
			load.burst(ctx)
			nextBurst = nextBurst.Add(opts.burstEvery)
		}
		select {
		case <-ctx.Done():
			return samples
		case <-tick.C:
		}
	}
}

// soakVerdict prints the growth of every series and what failed, and
// returns an error if anything did.
func soakVerdict(w io.Writer, l *lab.Lab, load *soakLoad, samples []soakSample, broken []string, interrupted error) error {
	opts := load.opts
	var failures []string
	var complete []soakSample
	skip := 0
	for _, s := range samples {
		if !s.ok() {
			failures = append(failures, fmt.Sprintf("sample at %s incomplete", clock(s.at)))
			continue
		}
		if s.at < opts.warmup {
			skip++
		}
		complete = append(complete, s)
	}
	fmt.Fprintln(w)
	win, err := compareWindows(len(complete), skip)
	if err != nil {
		failures = append(failures, err.Error())
	} else {
		failures = append(failures, writeGrowth(w, complete, win, l.Nodes())...)
	}
	failures = append(failures, writeCalls(w, l, load, broken)...)
	if interrupted != nil {
		failures = append(failures, "interrupted: "+interrupted.Error())
	}
	if len(failures) > 0 {
		fmt.Fprintf(w, "\nsoak FAILED:\n  %s\n", strings.Join(failures, "\n  "))
		return fmt.Errorf("soak failed: %s", strings.Join(failures, "; "))
	}
	fmt.Fprintln(w, "\nsoak PASSED: nothing grew beyond its margin, every call worked")
	return nil
}

// writeGrowth prints the growth table and returns the series that grew
// too much.
func writeGrowth(w io.Writer, samples []soakSample, win windows, nodes int) []string {
	fmt.Fprintf(w, "growth: median of samples %s-%s against %s-%s; limit: the early median plus a margin\n",
		clock(samples[win.early].at), clock(samples[win.early+win.size-1].at),
		clock(samples[win.late].at), clock(samples[len(samples)-1].at))
	fmt.Fprintf(w, "  %-34s %9s %9s %9s\n", "series", "early", "late", "limit")
	var failed []string
	for _, g := range checkGrowth(soakSeries(samples, nodes), win) {
		mark := "ok"
		if !g.ok() {
			mark = "GREW"
			failed = append(failed, fmt.Sprintf("%s grew from %.1f to %.1f (limit %.1f)", g.name, g.early, g.late, g.limit))
		}
		fmt.Fprintf(w, "  %-34s %9.1f %9.1f %9.1f  %s\n", g.name, g.early, g.late, g.limit, mark)
	}
	return failed
}

// writeCalls prints how the calls went and returns what failed.
func writeCalls(w io.Writer, l *lab.Lab, load *soakLoad, broken []string) []string {
	var failed []string
	fmt.Fprintln(w, "\ncalls:")
	var total tally
	for _, d := range load.dialers {
		fmt.Fprintf(w, "  %-24s %7d ok %5d failed  %s\n", d.name, d.ok, d.failed, d.lastErr)
		total.add(d.tally)
	}
	fmt.Fprintf(w, "  %-24s %7d ok %5d failed\n", "bursts", load.bursts.ok, load.bursts.failed)
	fmt.Fprintf(w, "  %-24s %7d ok %5d failed\n", "pods added and removed", load.churn.ok, load.churn.failed)
	fmt.Fprintf(w, "  %-24s %7d of %d ran to the end\n", "streams", len(load.streams)-len(broken), len(load.streams))
	for _, n := range load.notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	total.add(load.bursts)
	total.add(load.churn)
	if total.failed > load.opts.maxFailed {
		failed = append(failed, fmt.Sprintf("%d calls failed (at most %d may)", total.failed, load.opts.maxFailed))
	}
	for _, b := range broken {
		failed = append(failed, "stream broke: "+b)
	}
	for i := 1; i <= l.Nodes(); i++ {
		for _, name := range []string{lab.ZtunnelName(i), lab.AgentdName(i)} {
			if n := l.Restarts(name); n > 0 {
				failed = append(failed, fmt.Sprintf("%s restarted %d times", name, n))
			}
		}
	}
	return failed
}
