// Package meshconfig is the node's view of the mesh: the workloads it must
// know about and the trust domain. In standalone mode it is read from a local
// JSON file; later the controller's config stream feeds the same types.
package meshconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Workload is one pod as the mesh sees it.
type Workload struct {
	UID  string `json:"uid"`
	Name string `json:"name"`
	// WorkloadName is the name of what runs the pod: its controller (a
	// Deployment's ReplicaSet with its pod-template-hash suffix taken off,
	// so the Deployment; a StatefulSet, DaemonSet, Job), else the pod's
	// own name. It stays the same across a rollout, so metrics use it
	// (Istio's workload_name).
	WorkloadName   string            `json:"workloadName,omitempty"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	Node           string            `json:"node"`
	IPs            []netip.Addr      `json:"ips"`
	Labels         map[string]string `json:"labels,omitempty"`
	// Enrolled says the pod's traffic is captured by the mesh.
	Enrolled bool `json:"enrolled"`
	// Netns is the path of the pod's network namespace, for the agentd of
	// the pod's node (standalone mode; in Kubernetes mode agentd finds it).
	Netns string `json:"netns,omitempty"`
	// Authz is what decides who may connect to the workload: the policies
	// that select it, its mTLS mode and its namespace's default. Only the
	// workload's own node receives it (it enforces inbound); nil means no
	// policy data, and ztunnel then refuses every inbound connection.
	Authz *policy.Target `json:"authz,omitempty"`
}

// Config is everything a node needs.
type Config struct {
	TrustDomain string     `json:"trustDomain"`
	Workloads   []Workload `json:"workloads"`
	// Services come from the controller (Kubernetes mode); standalone
	// configs usually leave them out.
	Services []Service `json:"services,omitempty"`
	// Policies are the compiled AgentPolicies the workloads' Authz refer to
	// by name (Target.PolicyRefs): each body once, however many workloads
	// it selects. Validate resolves the references.
	Policies []policy.Policy `json:"policies,omitempty"`
}

// Identity returns the SPIFFE id of w.
func (c *Config) Identity(w *Workload) spiffe.ID {
	return spiffe.New(c.TrustDomain, w.Namespace, w.ServiceAccount)
}

// Validate checks that every workload is complete and that no address or
// uid is claimed twice.
func (c *Config) Validate() error {
	if c.TrustDomain == "" {
		c.TrustDomain = mesh.DefaultTrustDomain
	}
	// A config from the controller comes sorted by UID: duplicates are
	// then neighbours, and a view of 10 000 workloads needs no UID map.
	sorted := slices.IsSortedFunc(c.Workloads, func(a, b Workload) int { return strings.Compare(a.UID, b.UID) })
	var uids map[string]bool
	if !sorted {
		uids = make(map[string]bool, len(c.Workloads))
	}
	lastUID := ""
	ips := make(map[netip.Addr]int, len(c.Workloads)) // -> index of the workload holding it
	var errs []error
	for i := range c.Workloads {
		w := &c.Workloads[i]
		if w.UID == "" || w.Name == "" || w.Namespace == "" || w.ServiceAccount == "" || w.Node == "" {
			errs = append(errs, fmt.Errorf("workload %d (%s/%s): uid, name, namespace, serviceAccount and node are required", i, w.Namespace, w.Name))
			continue
		}
		var dup bool
		if sorted {
			dup, lastUID = w.UID == lastUID, w.UID
		} else {
			dup, uids[w.UID] = uids[w.UID], true
		}
		if dup {
			errs = append(errs, fmt.Errorf("workload %s/%s: duplicate uid %q", w.Namespace, w.Name, w.UID))
		}
		for _, ip := range w.IPs {
			if !ip.IsValid() {
				errs = append(errs, fmt.Errorf("workload %s/%s: invalid ip", w.Namespace, w.Name))
				continue
			}
			ip = ip.Unmap()
			if other, taken := ips[ip]; taken {
				o := &c.Workloads[other]
				errs = append(errs, fmt.Errorf("workload %s/%s: ip %s already belongs to %s/%s", w.Namespace, w.Name, ip, o.Namespace, o.Name))
			}
			ips[ip] = i
		}
	}
	for i := range c.Services {
		if err := c.Services[i].validateRoutes(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.resolvePolicies())
	return errors.Join(errs...)
}

// resolvePolicies gives every workload whose Authz names policies by
// PolicyRefs a copy of its Authz with those policies in Policies (after
// any it had inline), from c.Policies. The Authz it started with is not
// modified (a config client keeps it for the next version). A reference
// to a policy the config does not carry is an error: guessing would
// either open or close the workload.
func (c *Config) resolvePolicies() error {
	if len(c.Policies) == 0 && !c.hasRefs() {
		return nil
	}
	byKey := make(map[string]*policy.Policy, len(c.Policies))
	for i := range c.Policies {
		byKey[c.Policies[i].Key()] = &c.Policies[i]
	}
	var errs []error
	for i := range c.Workloads {
		w := &c.Workloads[i]
		if w.Authz == nil || len(w.Authz.PolicyRefs) == 0 {
			continue
		}
		t := *w.Authz
		t.Policies = slices.Clone(t.Policies)
		for _, ref := range t.PolicyRefs {
			p, ok := byKey[ref]
			if !ok {
				errs = append(errs, fmt.Errorf("workload %s/%s: policy %s is not in the config", w.Namespace, w.Name, ref))
				continue
			}
			t.Policies = append(t.Policies, *p)
		}
		t.PolicyRefs = nil
		w.Authz = &t
	}
	return errors.Join(errs...)
}

func (c *Config) hasRefs() bool {
	for i := range c.Workloads {
		if a := c.Workloads[i].Authz; a != nil && len(a.PolicyRefs) > 0 {
			return true
		}
	}
	return false
}

// Parse decodes and validates a config.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("decode mesh config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid mesh config: %w", err)
	}
	return &c, nil
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mesh config: %w", err)
	}
	return Parse(data)
}

// Save writes c to path atomically (write to a temporary file, then rename).
func Save(path string, c *Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode mesh config: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write mesh config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write mesh config: %w", err)
	}
	return nil
}
