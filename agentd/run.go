package agentd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/cnigate"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/logging"
)

// options are the flags of agentd run.
type options struct {
	mode   configsource.Flags // --node, and --config or --controller with its connection flags
	pinDir string
	cgroup string
	socket string
	accel  bool // --sockmap-accel
	log    logging.Flags
	// The CNI gate (agentd/gate.go): its socket ("" = no gate) and how
	// long a new pod waits for the config to name it.
	cniSocket string
	cniWait   time.Duration
	// Chaining the plugin into the node's CNI configuration (cniconf.go):
	// off when cniConfDir is "".
	cniConfDir, cniBinDir, cniPlugin, cniPluginSocket string

	// Not flags: intervals that tests shorten.
	watchInterval time.Duration // default configsource.DefaultInterval
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
	o := &options{retryInterval: 2 * time.Second}
	fs := flag.NewFlagSet("agentd run", flag.ContinueOnError)
	fs.SetOutput(out)
	o.mode.Register(fs, configsource.Component{ControllerNote: "; pod netns are found by their cgroup below --cgroup"})
	fs.StringVar(&o.pinDir, "pin-dir", mesh.DefaultPinDir, "bpffs directory for pinned maps, programs and links")
	fs.StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory to attach capture to (default: the cgroup2 root)")
	fs.StringVar(&o.socket, "socket", mesh.DefaultAgentdSocket, "unix socket ztunnel connects to")
	fs.BoolVar(&o.accel, "sockmap-accel", false, "loopback-leg acceleration: sockops and sk_msg move what an enrolled pod's app sends to ztunnel from socket to socket, bypassing loopback TCP (a kernel without sk_msg gets a warning and runs without it)")
	fs.StringVar(&o.cniSocket, "cni-socket", "", "unix socket the AgentMesh CNI plugin calls on each new pod sandbox, so an enrolled pod is captured before its containers start (the Helm chart sets "+cnigate.DefaultSocket+"); empty: no CNI gate, pods are captured once the config gives their address")
	fs.DurationVar(&o.cniWait, "cni-wait", 10*time.Second, "how long the CNI gate holds a new pod the mesh config does not name yet; after that the pod starts uncaptured and is captured once the config names it")
	fs.StringVar(&o.cniConfDir, "cni-conf-dir", "", "the node's CNI configuration directory (as mounted here): while agentd runs, the AgentMesh plugin is kept at the end of the primary network's plugin chain, and taken out when agentd stops; empty: the plugin is not chained by agentd")
	fs.StringVar(&o.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "the node's CNI plugin directory (as mounted here), where --cni-conf-dir installs the plugin")
	fs.StringVar(&o.cniPlugin, "cni-plugin", "", "the plugin binary to install (default: "+PluginType+" next to agentd's own binary)")
	fs.StringVar(&o.cniPluginSocket, "cni-plugin-socket", "", "--cni-socket as the node sees it, written into the plugin's configuration (default: --cni-socket)")
	o.log.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.cniConfDir != "" && o.cniSocket == "" {
		return nil, errors.New("--cni-conf-dir needs --cni-socket")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := checkMode(&o.mode); err != nil {
		return nil, err
	}
	if o.cniWait <= 0 {
		return nil, errors.New("--cni-wait must be positive")
	}
	return o, nil
}

// checkMode is the mode check every node component shares, in the words
// agentd has always used (its users and tests match on them): one problem
// at a time, a missing --node first. ztunnel names them all at once
// (configsource.ModeError).
func checkMode(f *configsource.Flags) error {
	var e *configsource.ModeError
	if err := f.Check(); !errors.As(err, &e) {
		return err
	}
	switch {
	case slices.Contains(e.Missing, "--node"):
		return errors.New("--node is required")
	case e.Kubernetes && len(e.Refused) > 0:
		return e // "--config cannot be used with --controller: ..."
	case e.Kubernetes:
		return errors.New("--controller needs --controller-ca and --token-file")
	case len(e.Missing) > 0:
		return errors.New("--config is required (or --controller, --controller-ca and --token-file for Kubernetes mode)")
	}
	return fmt.Errorf("%s only works with --controller (Kubernetes mode)", slices.Min(e.Refused))
}

// cleanup runs "agentd cleanup": remove every pin, which detaches capture.
func cleanup(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agentd cleanup", flag.ContinueOnError)
	fs.SetOutput(stdout)
	pinDir := fs.String("pin-dir", mesh.DefaultPinDir, "bpffs directory to remove")
	cniConfDir := fs.String("cni-conf-dir", "", "also take the AgentMesh CNI plugin out of the network configurations in this directory (what a stopping agentd does; after it was killed, pods cannot start until then)")
	var logf logging.Flags
	logf.Register(fs)
	if err := fs.Parse(args); err != nil {
		return ignoreHelp(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	log := logf.Logger(stdout)
	var err error
	if *cniConfDir != "" {
		err = (&cniInstall{confDir: *cniConfDir, log: log}).remove()
	}
	return errors.Join(err, loader.Cleanup(*pinDir, log))
}

func ignoreHelp(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
