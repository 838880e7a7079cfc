package ztunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// source is ztunnel's config source: the shared one of its mode (the
// polled config file or the controller's stream, internal/configsource)
// and what ztunnel adds to each mode: the CA that signs its workload
// certificates and the trust bundle, the standalone authorization default,
// and readiness. Both modes hand every new config to the same apply
// (Node.SetConfig), so the Index is swapped the same way.
//
// Standalone: a local CA (--ca-cert, --ca-key). The file is the complete
// truth and has no policy concept of its own: a workload without "authz"
// gets allowAll (PERMISSIVE, default Allow) when the file is loaded, so
// standalone meshes keep working without policies. A workload with an
// explicit "authz" keeps it, which lets a standalone mesh (and its tests)
// exercise policies.
//
// Kubernetes mode: the controller's CA, the trust bundle from the stream,
// and ready once the first config is applied. Nothing is filled in: a nil
// Authz means no policy data yet, which denies. While the controller is
// away the last config stays in force and certificates are kept (the
// identity manager retries renewals with backoff and uses the current
// certificate until it expires).
type source struct {
	cfg   *configsource.Source
	ca    *pki.LocalCA  // standalone mode
	got   atomic.Bool   // a first config was applied
	first chan struct{} // closed when got is set
}

// newSource returns the source of the mode o selects.
func newSource(o *options, log *slog.Logger) (*source, error) {
	var ca *pki.LocalCA
	if !o.mode.Kubernetes() {
		var err error
		if ca, err = pki.LoadLocalCA(o.caCert, o.caKey); err != nil {
			return nil, fmt.Errorf("load local ca: %w", err)
		}
	}
	cfg, err := configsource.New(o.mode, configsource.Options{Component: configapi.ComponentZtunnel, Logger: log})
	if err != nil {
		return nil, err
	}
	return &source{cfg: cfg, ca: ca, first: make(chan struct{})}, nil
}

// signer issues workload certificates.
func (s *source) signer() identity.Signer {
	if s.ca != nil {
		return s.ca
	}
	return configclient.RemoteSigner{Client: s.cfg.Client()}
}

// bundle is the trust bundle to start with; nil when it arrives later
// through run's setBundle.
func (s *source) bundle() *x509.CertPool {
	if s.ca != nil {
		return s.ca.Bundle()
	}
	return nil
}

// run hands every new config to apply and every new trust bundle to
// setBundle until ctx is done.
func (s *source) run(ctx context.Context, apply func(*meshconfig.Config), setBundle func(*x509.CertPool)) error {
	return s.cfg.Run(ctx, s.applier(apply), setBundle)
}

// applier is apply with what the mode adds to each config (see source).
func (s *source) applier(apply func(*meshconfig.Config)) func(*meshconfig.Config) {
	if !s.cfg.Kubernetes() {
		return func(c *meshconfig.Config) {
			fillStandaloneAuthz(c)
			apply(c)
			s.applied()
		}
	}
	return func(c *meshconfig.Config) {
		apply(c)
		s.applied()
	}
}

// errNoConfigYet is the readiness answer before the controller's first config.
var errNoConfigYet = errors.New("waiting for the first config from the controller")

// ready is nil once the source delivered what readiness needs.
func (s *source) ready() error {
	if s.cfg.Kubernetes() && !s.got.Load() {
		return errNoConfigYet
	}
	return nil
}

// waitConfigured waits until the source applied a first config (false:
// ctx ended first).
func (s *source) waitConfigured(ctx context.Context) bool {
	select {
	case <-s.first:
		return true
	case <-ctx.Done():
		return s.got.Load()
	}
}

// applied marks that a config was applied.
func (s *source) applied() {
	if !s.got.Swap(true) {
		close(s.first)
	}
}

// close releases the source after run returned and nothing signs any
// more.
func (s *source) close() error { return s.cfg.Close() }

// describe is for the start-up log line.
func (s *source) describe() []any { return s.cfg.Describe() }

// fillStandaloneAuthz gives every workload of c without Authz its own
// allowAll target (see source).
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
