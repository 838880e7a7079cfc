// Package meshlab is the logic of the meshlab command: start and remove
// local labs (up, down), show the mesh at work (demo), and the small sample
// workloads that run inside lab pods (app ...).
package meshlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/agentmesh/agentmesh/test/bench"
	l7bench "github.com/agentmesh/agentmesh/test/bench/l7"
)

// Usage is the command line help.
const Usage = `usage: meshlab <command> [flags]

commands:
  up     start a lab (nodes, pods, agentd, ztunnel) and wait for Ctrl-C; an agentd,
         ztunnel or controller that dies is restarted, as its DaemonSet or
         Deployment would (backoff 100ms doubling to 5s; every restart is logged);
         in Kubernetes mode it prints a kubeconfig for kubectl on this machine
  down   remove whatever any lab left behind (netns, cgroups, pins, processes)
  demo   run a two-node mesh, make some agent calls, show what the mesh did
  app    sample workloads run inside pods: echo, http, send, stream, dialer, burst,
         flood (an attacker: half-open TLS handshakes and garbage connections),
         dns-query, dns-upstream (a resolver that says who asked), dns-flood
  bench  measure the mesh against direct pod-to-pod: latency, throughput, new connections through
         Service VIPs, the control plane and policy enforcement (see meshlab bench -h)
  soak   a steady mixed load on a lab for --duration (default 30m), sampled; fails if
         ztunnel's goroutines, fds or RSS or the eBPF map entries grow, or calls fail
`

// ErrUsage is returned for a bad command line.
var ErrUsage = errors.New("bad usage")

// Run runs the meshlab command line args (without the program name).
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", ErrUsage)
	}
	switch args[0] {
	case "up":
		return runUp(ctx, args[1:], stdout)
	case "down":
		return runDown(args[1:], stdout)
	case "demo":
		return runDemo(ctx, args[1:], stdout)
	case "app":
		return runApp(ctx, args[1:], stdout)
	case "bench":
		return bench.Run(ctx, args[1:], stdout)
	case "soak":
		return runSoak(ctx, args[1:], stdout)
	case bench.ClientCommand:
		return bench.Client(ctx, args[1:], stdout)
	case bench.ServerCommand:
		return bench.Server(ctx, args[1:])
	case l7bench.ClientCommand:
		return l7bench.Client(ctx, args[1:], stdout)
	case l7bench.ServerCommand:
		return l7bench.Server(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, Usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
}

// defaultBinDir is the directory of the running executable, where make
// build puts agentd and ztunnel next to meshlab.
func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

// newLogger logs to stderr, at debug level when verbose.
func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
