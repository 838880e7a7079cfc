package agentd

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/configclient"
)

// feed is where a mode takes the mesh config from: run hands every new
// config to apply until ctx is done, and returns after everything it
// started has stopped.
type feed interface {
	run(ctx context.Context, apply func(*meshconfig.Config))
	describe() []any
}

// newFeed returns the feed of the mode o selects, and in Kubernetes mode
// the finder of pod network namespaces.
func newFeed(o *options, log *slog.Logger) (feed, NetnsFinder, error) {
	if !o.kubernetes() {
		return fileFeed{o: o, log: log}, nil, nil
	}
	root := o.cgroup
	if root == "" {
		var err error
		if root, err = loader.FindCgroup2Root(); err != nil {
			return nil, nil, err
		}
	}
	finder, err := NewCgroupFinder(root, log)
	if err != nil {
		return nil, nil, err
	}
	s := &streamFeed{addr: o.controller}
	s.client, err = configclient.New(configclient.Options{
		Addr: o.controller, CAFile: o.controllerCA, TokenFile: o.tokenFile, ServerName: o.controllerServerName,
		Node: o.node, Component: configapi.ComponentAgentd, Logger: log, OnConfig: s.onConfig,
	})
	if err != nil {
		return nil, nil, err
	}
	return s, finder, nil
}

// fileFeed is standalone mode: the polled config file.
type fileFeed struct {
	o   *options
	log *slog.Logger
}

func (f fileFeed) run(ctx context.Context, apply func(*meshconfig.Config)) {
	meshconfig.Watch(ctx, f.o.configPath, f.o.watchInterval, f.log, apply)
}

func (f fileFeed) describe() []any { return []any{"mode", "standalone", "config", f.o.configPath} }

// streamFeed is Kubernetes mode: the controller's config stream. While the
// controller is away nothing is applied, so the last config stays.
type streamFeed struct {
	addr   string
	client *configclient.Client
	apply  func(*meshconfig.Config) // set by run before the client runs
}

func (s *streamFeed) run(ctx context.Context, apply func(*meshconfig.Config)) {
	s.apply = apply
	s.client.Run(ctx) //nolint:errcheck // returns nil when ctx is done
	s.client.Close()
}

// onConfig accepts every valid config: a pod agentd cannot enroll yet is
// retried by the loop, it is no reason to refuse the version.
func (s *streamFeed) onConfig(c *meshconfig.Config) error {
	s.apply(c)
	return nil
}

func (s *streamFeed) describe() []any { return []any{"mode", "kubernetes", "controller", s.addr} }

// kubernetes reports whether agentd runs in Kubernetes mode (--controller).
func (o *options) kubernetes() bool { return o.controller != "" }

// checkMode checks that exactly one mode is configured with all its flags.
func (o *options) checkMode() error {
	kubeOnly := map[string]string{"--controller-ca": o.controllerCA, "--token-file": o.tokenFile,
		"--controller-server-name": o.controllerServerName}
	switch {
	case o.kubernetes() && o.configPath != "":
		return fmt.Errorf("--config cannot be used with --controller: Kubernetes mode takes the config from the controller")
	case o.kubernetes() && (o.controllerCA == "" || o.tokenFile == ""):
		return fmt.Errorf("--controller needs --controller-ca and --token-file")
	case o.kubernetes():
		return nil
	case o.configPath == "":
		return fmt.Errorf("--config is required (or --controller, --controller-ca and --token-file for Kubernetes mode)")
	}
	for _, name := range sortedKeys(kubeOnly) {
		if kubeOnly[name] != "" {
			return fmt.Errorf("%s only works with --controller (Kubernetes mode)", name)
		}
	}
	return nil
}
