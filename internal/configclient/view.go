package configclient

import (
	"crypto/x509"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

// view mirrors the controller's view of this node on one stream. It
// follows every version, accepted or not, because the next delta is
// relative to what the controller sent.
type view struct {
	full      bool
	td        string
	bundle    []byte
	workloads map[string]meshconfig.Workload
	services  map[string]meshconfig.Service
	policies  map[string]policy.Policy // by namespace/name
}

func newView() *view {
	return &view{workloads: map[string]meshconfig.Workload{}, services: map[string]meshconfig.Service{},
		policies: map[string]policy.Policy{}}
}

// merge applies one response to the mirror.
func (v *view) merge(r *configapi.ConfigResponse) error {
	if r.Full {
		v.full = true
		clear(v.workloads)
		clear(v.services)
		clear(v.policies)
	} else if !v.full {
		return errNoSnapshot
	}
	v.td, v.bundle = r.TrustDomain, r.TrustBundlePEM
	for _, uid := range r.RemovedWorkloads {
		delete(v.workloads, uid)
	}
	for _, w := range r.Workloads {
		v.workloads[w.UID] = w
	}
	for _, k := range r.RemovedServices {
		delete(v.services, k)
	}
	for _, s := range r.Services {
		v.services[s.Key()] = s
	}
	for _, p := range r.Policies {
		v.policies[p.Key()] = p
	}
	v.dropUnreferenced()
	return nil
}

// dropUnreferenced forgets the policies no workload refers to any more
// (the controller sends a policy again with any workload that comes to
// refer to it).
func (v *view) dropUnreferenced() {
	used := map[string]bool{}
	for _, w := range v.workloads {
		if w.Authz != nil {
			for _, ref := range w.Authz.PolicyRefs {
				used[ref] = true
			}
		}
	}
	maps.DeleteFunc(v.policies, func(k string, _ policy.Policy) bool { return !used[k] })
}

// config builds the Config of the mirror, sorted.
func (v *view) config() *meshconfig.Config {
	c := &meshconfig.Config{TrustDomain: v.td}
	for _, uid := range slices.Sorted(maps.Keys(v.workloads)) {
		c.Workloads = append(c.Workloads, v.workloads[uid])
	}
	for _, k := range slices.Sorted(maps.Keys(v.services)) {
		c.Services = append(c.Services, v.services[k])
	}
	for _, k := range slices.Sorted(maps.Keys(v.policies)) {
		c.Policies = append(c.Policies, v.policies[k])
	}
	return c
}

// apply merges r and hands the result to the callbacks. An error means the
// version is refused; the previous config stays in force.
func (c *Client) apply(v *view, r *configapi.ConfigResponse) error {
	if err := v.merge(r); err != nil {
		return err
	}
	cfg := v.config()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	pool, err := parseBundle(v.bundle)
	if err != nil {
		return err
	}
	if old := c.bundle.Load(); old == nil || !old.Equal(pool) {
		c.bundle.Store(pool)
		if c.o.OnTrustBundle != nil {
			c.o.OnTrustBundle(pool)
		}
	}
	if c.accepted != nil && reflect.DeepEqual(c.accepted, cfg) {
		return nil // e.g. the snapshot after a reconnect: nothing new
	}
	if c.o.OnConfig != nil {
		if err := c.o.OnConfig(cfg); err != nil {
			return err
		}
	}
	c.accepted = cfg
	c.log.Info("applied config", "version", r.Version, "full", r.Full,
		"workloads", len(cfg.Workloads), "services", len(cfg.Services), "policies", len(cfg.Policies))
	return nil
}

func parseBundle(pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if len(pem) == 0 || !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("trust bundle has no certificates")
	}
	return pool, nil
}
