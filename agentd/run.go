package agentd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/logging"
)

// options are the flags of agentd run.
type options struct {
	node       string
	configPath string
	pinDir     string
	cgroup     string
	socket     string
	log        logging.Flags
	// Kubernetes mode: the config comes from the controller.
	controller           string
	controllerCA         string
	tokenFile            string
	controllerServerName string

	// Not flags: intervals that tests shorten.
	watchInterval time.Duration
	retryInterval time.Duration
}

// Run runs the agentd command line: "run" (the default) or "cleanup".
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		opts, err := parseRunFlags(args, stdout)
		if err != nil {
			return ignoreHelp(err)
		}
		return run(ctx, opts, opts.log.Logger(stdout), openLoader)
	case "cleanup":
		return cleanup(args, stdout)
	}
	return fmt.Errorf("unknown subcommand %q (want run or cleanup)", cmd)
}

// openLoader opens the real eBPF datapath.
func openLoader(o loader.Options) (Datapath, error) { return loader.Open(o) }

func parseRunFlags(args []string, out io.Writer) (*options, error) {
	o := &options{watchInterval: 500 * time.Millisecond, retryInterval: 2 * time.Second}
	fs := flag.NewFlagSet("agentd run", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.node, "node", "", "name of this node (required)")
	fs.StringVar(&o.configPath, "config", "", "standalone mode: mesh config JSON file")
	fs.StringVar(&o.controller, "controller", "", "Kubernetes mode: controller address host:port (replaces --config); pod netns are found by their cgroup below --cgroup")
	fs.StringVar(&o.controllerCA, "controller-ca", "", "Kubernetes mode: PEM roots that verify the controller")
	fs.StringVar(&o.tokenFile, "token-file", "", "Kubernetes mode: file with this pod's bound ServiceAccount token (re-read on every call)")
	fs.StringVar(&o.controllerServerName, "controller-server-name", "", "Kubernetes mode: name to verify in the controller's certificate (default: the host of --controller)")
	fs.StringVar(&o.pinDir, "pin-dir", mesh.DefaultPinDir, "bpffs directory for pinned maps, programs and links")
	fs.StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory to attach capture to (default: the cgroup2 root)")
	fs.StringVar(&o.socket, "socket", mesh.DefaultAgentdSocket, "unix socket ztunnel connects to")
	o.log.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case o.node == "":
		return nil, errors.New("--node is required")
	}
	if err := o.checkMode(); err != nil {
		return nil, err
	}
	return o, nil
}

// cleanup runs "agentd cleanup": remove every pin, which detaches capture.
func cleanup(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agentd cleanup", flag.ContinueOnError)
	fs.SetOutput(stdout)
	pinDir := fs.String("pin-dir", mesh.DefaultPinDir, "bpffs directory to remove")
	var logf logging.Flags
	logf.Register(fs)
	if err := fs.Parse(args); err != nil {
		return ignoreHelp(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return loader.Cleanup(*pinDir, logf.Logger(stdout))
}

func ignoreHelp(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
