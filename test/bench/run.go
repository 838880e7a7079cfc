package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Options configure a benchmark run on a lab.
type Options struct {
	BinDir    string        // agentd, ztunnel and meshlab
	Duration  time.Duration // latency sending time per scenario
	Rate      float64       // latency requests per second
	Conns     int           // latency connections
	Size      int           // latency payload bytes
	BulkBytes int64         // bytes of the single-stream throughput run
	IPv6      bool          // use the pods' IPv6 addresses
	IdleConns int           // connections held for the memory measurement (0: none)
	// ProfileDir, when set, receives the data path lab's ztunnel profiles
	// (ztunnel-<node>.cpu.prof and .alloc.prof over every scenario: echo
	// latency and bulk throughput; see lab.Options.ProfileDir).
	ProfileDir string
	// AgentdArgs are added to the data path lab's agentd command lines
	// (lab.Options.AgentdArgs), for example --sockmap-accel.
	AgentdArgs []string
	// SameNodeFastPath runs the data path lab's ztunnels with
	// --same-node-fast-path.
	SameNodeFastPath bool
	Logger           *slog.Logger // progress (default: discard)
	// Command runs the benchmark's client and server inside pods as
	// Command + [ClientCommand or ServerCommand] + flags. Default:
	// BinDir/meshlab.
	Command []string

	scenarios []Scenario        // default Scenarios (tests measure fewer)
	cpFlags   controlPlaneFlags // which benchmarks; control-plane sizes (controlplane.go)
}

// Run builds a two-node lab, measures every scenario, and prints one table
// and the mesh/direct ratios to stdout; then it benchmarks the controller on
// a real Kubernetes control plane and prints a second table, times
// AgentPolicy enforcement on a Kubernetes-mode lab for a third, and
// compares a Service VIP with pod IP and direct on another Kubernetes-mode
// lab for a fourth (package services), and HTTP and MCP requests direct,
// through the mesh at L4 and per request (L7) on a last one (package l7). Flags: --bin-dir, --duration,
// --rate, --conns, --size, --bulk-bytes, --ipv6, --verbose; --data-path,
// --control-plane, --policy, --services and --l7 (all default true) pick the
// benchmarks, --cp-*, --policy-* and --svc-* size the last three (the
// services latency also takes --duration, --rate, --conns and --size).
// Progress goes to stderr.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	opts, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if opts.cpFlags.dataPath {
		err = runDataPath(ctx, opts, stdout)
	}
	if opts.cpFlags.controlPlane {
		err = errors.Join(err, runControlPlane(ctx, opts, stdout))
	}
	if opts.cpFlags.policy {
		err = errors.Join(err, runPolicy(ctx, opts, stdout))
	}
	if opts.cpFlags.services {
		err = errors.Join(err, runServices(ctx, opts, stdout))
	}
	if opts.cpFlags.l7 {
		err = errors.Join(err, runL7(ctx, opts, stdout))
	}
	if opts.cpFlags.balance {
		err = errors.Join(err, runBalance(ctx, opts, stdout))
	}
	if opts.cpFlags.scalePods > 0 {
		err = errors.Join(err, runScale(ctx, opts, stdout))
	}
	return err
}

// runDataPath measures every data-path scenario and prints their table.
func runDataPath(ctx context.Context, opts Options, stdout io.Writer) error {
	load := loadAverage()
	results, err := Measure(ctx, opts)
	if len(results) > 0 {
		WriteTable(stdout, opts, results)
		writeIdle(stdout, opts, results)
		writeCost(stdout, opts, results)
		fmt.Fprintf(stdout, "\nmachine: %d CPUs, load average %s before and %s after the run\n",
			runtime.NumCPU(), load, loadAverage())
	}
	return err
}

// defaultBinDir is the directory of the running executable (meshlab, next
// to agentd and ztunnel after make build).
func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

// loadAverage is the 1-minute load average from /proc/loadavg, "?" if
// unreadable.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func parseFlags(args []string, usage io.Writer) (Options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(usage)
	var o Options
	fs.StringVar(&o.BinDir, "bin-dir", defaultBinDir(), "directory with agentd, ztunnel and meshlab")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "latency measurement time per scenario")
	fs.Float64Var(&o.Rate, "rate", 500, "latency requests per second (all connections together)")
	fs.IntVar(&o.Conns, "conns", 8, "latency connections")
	fs.IntVar(&o.Size, "size", 1024, "latency request and response payload bytes")
	fs.Int64Var(&o.BulkBytes, "bulk-bytes", 256<<20, "bytes of the single-stream throughput run")
	fs.BoolVar(&o.IPv6, "ipv6", false, "use the pods' IPv6 addresses")
	fs.IntVar(&o.IdleConns, "idle-conns", 1000, "connections held open to measure memory per idle connection (0: skip)")
	fs.StringVar(&o.ProfileDir, "profile", "", "data path: write each ztunnel's CPU profile of the run (echo and bulk scenarios) and its allocation profile into this directory (go tool pprof bin/ztunnel DIR/ztunnel-n1.cpu.prof)")
	fs.Func("agentd-arg", "data path: add this argument to every agentd's command line (repeatable; e.g. --agentd-arg=--sockmap-accel)", func(v string) error {
		o.AgentdArgs = append(o.AgentdArgs, v)
		return nil
	})
	fs.BoolVar(&o.SameNodeFastPath, "same-node-fast-path", true, "data path: run the ztunnels with --same-node-fast-path (ztunnel's default), so the mesh same-node row measures it; false measures same-node HBONE")
	o.cpFlags.register(fs)
	verbose := fs.Bool("verbose", false, "log lab progress to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return o, o.check()
}

func (o Options) check() error {
	lc := LatencyConfig{To: "-", Rate: o.Rate, Conns: o.Conns, Size: o.Size, Duration: o.Duration}
	if err := lc.check(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if o.IdleConns < 0 || o.IdleConns > maxHeld {
		return fmt.Errorf("bench: idle conns %d not in [0, %d]", o.IdleConns, maxHeld)
	}
	if o.BulkBytes <= 0 || o.BulkBytes > MaxBulk {
		return fmt.Errorf("bench: bulk bytes %d not in (0, %d]", o.BulkBytes, int64(MaxBulk))
	}
	return nil
}

// command is the command line that runs a benchmark subcommand in a pod.
func (o Options) command(sub string, args ...string) []string {
	cmd := o.Command
	if len(cmd) == 0 {
		cmd = []string{filepath.Join(o.BinDir, "meshlab")}
	}
	return append(append(append([]string{}, cmd...), sub), args...)
}
