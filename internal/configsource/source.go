// Package configsource is where a node component (agentd, ztunnel) takes
// the mesh config from, and the flags that choose it. Standalone mode polls
// a config file (--config, api/meshconfig.Watch); Kubernetes mode
// (--controller) follows the controller's config stream
// (internal/configclient). Either way the last good config stays in force:
// an invalid file is ignored, and nothing is applied while the controller
// is away.
//
// What a component adds per mode stays in the component: ztunnel's local
// CA, trust bundle, readiness and its standalone authorization default;
// agentd's finder of pod network namespaces.
package configsource

import (
	"cmp"
	"context"
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/configclient"
)

// DefaultInterval is how often standalone mode reads the config file.
const DefaultInterval = 500 * time.Millisecond

// Options configure a Source.
type Options struct {
	// Component is configapi.ComponentAgentd or ComponentZtunnel.
	Component string
	// Interval is how often standalone mode reads the file (default
	// DefaultInterval).
	Interval time.Duration
	Logger   *slog.Logger // required
}

// Source is the mode's config source. Run it once; Close it after Run
// has returned (and, in Kubernetes mode, once nothing signs through
// Client any more).
type Source struct {
	path     string // standalone mode
	interval time.Duration
	addr     string               // Kubernetes mode
	client   *configclient.Client // Kubernetes mode; nil standalone
	log      *slog.Logger

	// Set by Run before the client runs; called on Run's goroutine.
	apply     func(*meshconfig.Config)
	setBundle func(*x509.CertPool)
}

// New returns the source of the mode f chooses (f has passed Check). It
// does no I/O.
func New(f Flags, o Options) (*Source, error) {
	s := &Source{path: f.ConfigPath, interval: cmp.Or(o.Interval, DefaultInterval), addr: f.Controller, log: o.Logger}
	if !f.Kubernetes() {
		return s, nil
	}
	c, err := configclient.New(configclient.Options{
		Addr: f.Controller, CAFile: f.ControllerCA, TokenFile: f.TokenFile, ServerName: f.ControllerServerName,
		Node: f.Node, Component: o.Component, Logger: o.Logger,
		OnConfig: s.onConfig, OnTrustBundle: s.onBundle,
	})
	if err != nil {
		return nil, err
	}
	s.client = c
	return s, nil
}

// Kubernetes reports whether s follows the controller's stream.
func (s *Source) Kubernetes() bool { return s.client != nil }

// Client is the connection to the controller in Kubernetes mode (nil
// standalone); ztunnel asks the controller's CA through it.
func (s *Source) Client() *configclient.Client { return s.client }

// Run hands every new config to apply, and in Kubernetes mode every new
// trust bundle to setBundle (nil: not wanted; a bundle comes before the
// config of the same version), until ctx is done. It returns nil then.
func (s *Source) Run(ctx context.Context, apply func(*meshconfig.Config), setBundle func(*x509.CertPool)) error {
	if s.client == nil {
		meshconfig.Watch(ctx, s.path, s.interval, s.log, apply)
		return nil
	}
	s.apply, s.setBundle = apply, setBundle
	return s.client.Run(ctx)
}

// onConfig takes every config the client validated: a config the
// component cannot act on yet (a pod not started) is retried by the
// component, it is no reason to refuse the version.
func (s *Source) onConfig(c *meshconfig.Config) error {
	s.apply(c)
	return nil
}

func (s *Source) onBundle(p *x509.CertPool) {
	if s.setBundle != nil {
		s.setBundle(p)
	}
}

// Close closes the connection to the controller, if any.
func (s *Source) Close() error {
	if s.client == nil {
		return nil
	}
	return s.client.Close()
}

// Describe is the mode for the component's start-up log line.
func (s *Source) Describe() []any {
	if s.client == nil {
		return []any{"mode", "standalone", "config", s.path}
	}
	return []any{"mode", "kubernetes", "controller", s.addr}
}
