package ztunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// source is where one mode takes the mesh config, the trust bundle and the
// workload certificates from. Both modes hand every new config to the same
// apply (Node.SetConfig), so the Index is swapped the same way.
type source interface {
	// signer issues workload certificates.
	signer() identity.Signer
	// bundle is the trust bundle to start with; nil when it arrives later
	// through run's setBundle.
	bundle() *x509.CertPool
	// run hands every new config to apply and every new trust bundle to
	// setBundle until ctx is done.
	run(ctx context.Context, apply func(*meshconfig.Config), setBundle func(*x509.CertPool)) error
	// ready is nil once the source delivered what readiness needs.
	ready() error
	// close releases the source after run returned and nothing signs any
	// more.
	close() error
	// describe is for the start-up log line.
	describe() []any
}

// newSource returns the source of the mode o selects.
func newSource(o *options, log *slog.Logger) (source, error) {
	if o.kubernetes() {
		return newControllerSource(o, log)
	}
	ca, err := pki.LoadLocalCA(o.caCert, o.caKey)
	if err != nil {
		return nil, fmt.Errorf("load local ca: %w", err)
	}
	return &fileSource{path: o.configPath, ca: ca, log: log}, nil
}

// fileSource is standalone mode: a polled config file and a local CA.
//
// The file is the complete truth and has no policy concept of its own: a
// workload without "authz" gets allowAll (PERMISSIVE, default Allow) when
// the file is loaded, so standalone meshes keep working without policies.
// A workload with an explicit "authz" keeps it, which lets a standalone
// mesh (and its tests) exercise policies. Kubernetes mode fills in
// nothing: there a nil Authz means no policy data yet, which denies.
type fileSource struct {
	path string
	ca   *pki.LocalCA
	log  *slog.Logger
}

func (s *fileSource) signer() identity.Signer { return s.ca }
func (s *fileSource) bundle() *x509.CertPool  { return s.ca.Bundle() }
func (s *fileSource) ready() error            { return nil }
func (s *fileSource) close() error            { return nil }
func (s *fileSource) describe() []any         { return []any{"mode", "standalone", "config", s.path} }

func (s *fileSource) run(ctx context.Context, apply func(*meshconfig.Config), _ func(*x509.CertPool)) error {
	meshconfig.Watch(ctx, s.path, 500*time.Millisecond, s.log, func(c *meshconfig.Config) {
		fillStandaloneAuthz(c)
		apply(c)
	})
	return nil
}

// fillStandaloneAuthz gives every workload of c without Authz its own
// allowAll target (see fileSource).
func fillStandaloneAuthz(c *meshconfig.Config) {
	for i := range c.Workloads {
		if c.Workloads[i].Authz == nil {
			c.Workloads[i].Authz = allowAll()
		}
	}
}

// allowAll is the authorization data of a workload without policies in a
// PERMISSIVE namespace that allows by default.
func allowAll() *policy.Target {
	return &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}
}

// controllerSource is Kubernetes mode: the controller's config stream and
// CA. While the controller is away the last config stays in force and
// certificates are kept (the identity manager retries renewals with
// backoff and uses the current certificate until it expires).
type controllerSource struct {
	client *configclient.Client
	addr   string
	got    atomic.Bool // a first config was applied

	// Set by run before the client runs; called on run's goroutine.
	apply     func(*meshconfig.Config)
	setBundle func(*x509.CertPool)
}

func newControllerSource(o *options, log *slog.Logger) (*controllerSource, error) {
	s := &controllerSource{addr: o.controller}
	c, err := configclient.New(configclient.Options{
		Addr: o.controller, CAFile: o.controllerCA, TokenFile: o.tokenFile, ServerName: o.controllerServerName,
		Node: o.node, Component: configapi.ComponentZtunnel, Logger: log,
		OnConfig: s.onConfig, OnTrustBundle: s.onBundle,
	})
	if err != nil {
		return nil, err
	}
	s.client = c
	return s, nil
}

func (s *controllerSource) signer() identity.Signer {
	return configclient.RemoteSigner{Client: s.client}
}
func (s *controllerSource) bundle() *x509.CertPool { return nil }
func (s *controllerSource) close() error           { return s.client.Close() }
func (s *controllerSource) describe() []any        { return []any{"mode", "kubernetes", "controller", s.addr} }

func (s *controllerSource) run(ctx context.Context, apply func(*meshconfig.Config), setBundle func(*x509.CertPool)) error {
	s.apply, s.setBundle = apply, setBundle
	return s.client.Run(ctx)
}

// errNoConfigYet is the readiness answer before the controller's first config.
var errNoConfigYet = errors.New("waiting for the first config from the controller")

func (s *controllerSource) ready() error {
	if !s.got.Load() {
		return errNoConfigYet
	}
	return nil
}

// onConfig is the client's OnConfig: configclient has validated c already.
func (s *controllerSource) onConfig(c *meshconfig.Config) error {
	s.apply(c)
	s.got.Store(true)
	return nil
}

func (s *controllerSource) onBundle(p *x509.CertPool) { s.setBundle(p) }

// gateReady answers GET /healthz/ready with 503 and gate's reason while
// gate fails, and passes every other request (and the probe once gate is
// nil) to next.
func gateReady(gate func() error, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz/ready" {
			if err := gate(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
