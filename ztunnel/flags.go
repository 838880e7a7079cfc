package ztunnel

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/logging"
)

// options are ztunnel's command-line flags.
type options struct {
	node         string
	configPath   string
	pinDir       string
	agentdSocket string
	caCert       string
	caKey        string
	// Kubernetes mode (--controller): config, trust bundle and
	// certificates come from the controller.
	controller           string
	controllerCA         string
	tokenFile            string
	controllerServerName string

	certLifetime time.Duration
	adminAddr    string
	metricsAddr  string
	readyAddr    string
	maxConns     int
	log          logging.Flags
}

// parseFlags parses args; it returns flag.ErrHelp after printing usage.
func parseFlags(args []string, usage io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&o.node, "node", "", "name of this node (required)")
	fs.StringVar(&o.configPath, "config", "", "standalone mode: mesh config file (JSON), polled every 500ms")
	fs.StringVar(&o.pinDir, "pin-dir", mesh.DefaultPinDir, "bpffs directory where agentd pins the maps")
	fs.StringVar(&o.agentdSocket, "agentd-socket", mesh.DefaultAgentdSocket, "agentd hand-off unix socket")
	fs.StringVar(&o.caCert, "ca-cert", "", "standalone mode: local CA certificate (PEM)")
	fs.StringVar(&o.caKey, "ca-key", "", "standalone mode: local CA private key (PEM)")
	fs.StringVar(&o.controller, "controller", "", "Kubernetes mode: controller address host:port (replaces --config, --ca-cert, --ca-key)")
	fs.StringVar(&o.controllerCA, "controller-ca", "", "Kubernetes mode: PEM roots that verify the controller")
	fs.StringVar(&o.tokenFile, "token-file", "", "Kubernetes mode: file with this pod's bound ServiceAccount token (re-read on every call)")
	fs.StringVar(&o.controllerServerName, "controller-server-name", "", "Kubernetes mode: name to verify in the controller's certificate (default: the host of --controller)")
	fs.DurationVar(&o.certLifetime, "cert-lifetime", 24*time.Hour, "standalone mode: lifetime of workload certificates (the controller decides in Kubernetes mode)")
	fs.StringVar(&o.adminAddr, "admin-addr", fmt.Sprintf("127.0.0.1:%d", mesh.AdminPort), "admin API address (keep it on localhost)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", fmt.Sprintf(":%d", mesh.MetricsPort), "Prometheus metrics address")
	fs.StringVar(&o.readyAddr, "ready-addr", fmt.Sprintf(":%d", mesh.ReadinessPort), "readiness probe address")
	fs.IntVar(&o.maxConns, "max-connections", 0, "proxied connections (outbound and plaintext connections, inbound HBONE streams) carried at once; more are refused at once with a reset (0: only the fd budget, the open-file limit less a reserve, bounds them)")
	o.log.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := o.checkMode(); err != nil {
		return nil, err
	}
	if o.maxConns < 0 {
		return nil, errors.New("--max-connections must not be negative")
	}
	if o.certLifetime <= 0 {
		return nil, errors.New("--cert-lifetime must be positive")
	}
	return o, nil
}
