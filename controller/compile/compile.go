// Package compile turns AgentPolicies into the evaluated form of
// api/policy: selectors become identities, namespaces, workload UIDs and
// address blocks (through a Resolver the controller implements over its
// informers), and every field is checked again.
package compile

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Resolver answers the selector questions Compile cannot answer alone; the
// controller implements it over its informers.
type Resolver interface {
	// TrustDomain is the mesh's SPIFFE trust domain.
	TrustDomain() string
	// Namespaces are the names of the namespaces sel matches.
	Namespaces(sel labels.Selector) []string
	// Workloads are the UIDs of the workloads in namespaces ns that sel
	// matches.
	Workloads(ns policy.Set[string], sel labels.Selector) []string
}

// Compile turns an AgentPolicy into its evaluated form. It checks what the
// CRD schema checks too (the controller must not trust that the apiserver
// validated everything) and fails on the first problem.
func Compile(p *v1alpha1.AgentPolicy, r Resolver) (policy.Policy, error) {
	if p.Spec.Action != v1alpha1.ActionAllow && p.Spec.Action != v1alpha1.ActionDeny {
		return policy.Policy{}, fmt.Errorf("action %q: want Allow or Deny", p.Spec.Action)
	}
	out := policy.Policy{Namespace: p.Namespace, Name: p.Name, Action: policy.Action(p.Spec.Action)}
	for i := range p.Spec.Rules {
		rule, err := compileRule(p, i, r)
		if err != nil {
			return policy.Policy{}, fmt.Errorf("rules[%d]: %w", i, err)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

func compileRule(p *v1alpha1.AgentPolicy, i int, r Resolver) (policy.Rule, error) {
	src := &p.Spec.Rules[i]
	if p.Spec.Action == v1alpha1.ActionDeny && len(src.From) == 0 && len(src.Ports) == 0 {
		return policy.Rule{}, errors.New("deny rule without from or ports")
	}
	out := policy.Rule{Index: i, L7: src.UsesL7()}
	for j := range src.From {
		peer, err := compilePeer(p.Namespace, &src.From[j], r)
		if err != nil {
			return policy.Rule{}, fmt.Errorf("from[%d]: %w", j, err)
		}
		out.From = append(out.From, peer)
	}
	for j, port := range src.Ports {
		pr, err := compilePort(port)
		if err != nil {
			return policy.Rule{}, fmt.Errorf("ports[%d]: %w", j, err)
		}
		out.Ports = append(out.Ports, pr)
	}
	if err := compileL7(src, &out); err != nil {
		return policy.Rule{}, err
	}
	return out, nil
}

// compileL7 copies the rule's L7 parts, checked: HTTP methods are tokens
// (RFC 9110), paths absolute (or "*"), JSON-RPC methods and MCP tools non-empty.
func compileL7(src *v1alpha1.Rule, out *policy.Rule) error {
	if h := src.HTTP; h != nil {
		for i, m := range h.Methods {
			if !isToken(m) {
				return fmt.Errorf("http.methods[%d] %q: not an HTTP method", i, m)
			}
		}
		for i, p := range h.Paths {
			if p != "*" && !strings.HasPrefix(p, "/") {
				return fmt.Errorf("http.paths[%d] %q: want an absolute path (\"/...\", \"/prefix/*\") or \"*\"", i, p)
			}
			if strings.Contains(strings.TrimSuffix(p, "*"), "*") {
				return fmt.Errorf("http.paths[%d] %q: \"*\" only at the end", i, p)
			}
		}
		out.HTTP = &policy.HTTPMatch{Methods: slices.Clone(h.Methods), Paths: slices.Clone(h.Paths)}
	}
	if j := src.JSONRPC; j != nil {
		if slices.Contains(j.Methods, "") {
			return errors.New("jsonrpc.methods: empty method name")
		}
		out.JSONRPC = &policy.JSONRPCMatch{Methods: slices.Clone(j.Methods)}
	}
	if m := src.MCP; m != nil {
		if slices.Contains(m.Tools, "") {
			return errors.New("mcp.tools: empty tool name")
		}
		out.MCP = &policy.MCPMatch{Tools: slices.Clone(m.Tools)}
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func compilePort(p v1alpha1.Port) (policy.PortRange, error) {
	if p.Protocol != "" && p.Protocol != v1alpha1.ProtocolTCP {
		return policy.PortRange{}, fmt.Errorf("protocol %q: only TCP", p.Protocol)
	}
	end := p.Port
	if p.EndPort != nil {
		end = *p.EndPort
	}
	if p.Port < 1 || p.Port > 65535 || end < p.Port || end > 65535 {
		return policy.PortRange{}, fmt.Errorf("port range %d-%d: want 1 <= port <= endPort <= 65535", p.Port, end)
	}
	return policy.PortRange{From: uint16(p.Port), To: uint16(end)}, nil
}

// compilePeer compiles one from entry of a policy in namespace ns.
func compilePeer(ns string, s *v1alpha1.Source, r Resolver) (policy.Peer, error) {
	var out policy.Peer
	var err error
	if len(s.ServiceAccounts) > 0 {
		if out.Identities, err = identities(r.TrustDomain(), ns, s.ServiceAccounts); err != nil {
			return policy.Peer{}, err
		}
	}
	nsSet, err := namespaces(s, r)
	if err != nil {
		return policy.Peer{}, err
	}
	if s.PodSelector != nil {
		if nsSet.Any() {
			nsSet = policy.SetOf(ns)
		}
		sel, err := selector(s.PodSelector)
		if err != nil {
			return policy.Peer{}, fmt.Errorf("podSelector: %w", err)
		}
		out.Workloads = policy.SetOf(r.Workloads(nsSet, sel)...)
	} else {
		out.Namespaces = nsSet
	}
	if out.IPBlocks, err = ipBlocks(s.IPBlocks); err != nil {
		return policy.Peer{}, err
	}
	if !constrains(s) {
		return policy.Peer{}, errors.New("from entry sets nothing")
	}
	return out, nil
}

func constrains(s *v1alpha1.Source) bool {
	return len(s.ServiceAccounts) > 0 || len(s.Namespaces) > 0 || s.NamespaceSelector != nil ||
		s.PodSelector != nil || len(s.IPBlocks) > 0
}

// namespaces resolves namespaces and namespaceSelector (both: intersected).
func namespaces(s *v1alpha1.Source, r Resolver) (policy.Set[string], error) {
	var names []string
	switch {
	case s.NamespaceSelector != nil:
		sel, err := selector(s.NamespaceSelector)
		if err != nil {
			return policy.Set[string]{}, fmt.Errorf("namespaceSelector: %w", err)
		}
		names = r.Namespaces(sel)
		if len(s.Namespaces) > 0 {
			listed := policy.SetOf(s.Namespaces...)
			names = filter(names, listed.Has)
		}
	case len(s.Namespaces) > 0:
		names = s.Namespaces
	default:
		return policy.Set[string]{}, nil
	}
	return policy.SetOf(names...), nil
}

func filter(vs []string, keep func(string) bool) []string {
	var out []string
	for _, v := range vs {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}

// identities turns "name" and "namespace/name" into SPIFFE ids.
func identities(td, ns string, sas []string) (policy.Set[spiffe.ID], error) {
	ids := make([]spiffe.ID, 0, len(sas))
	for _, sa := range sas {
		sans, name, found := strings.Cut(sa, "/")
		if !found {
			sans, name = ns, sa
		}
		if sans == "" || name == "" || strings.Contains(name, "/") {
			return policy.Set[spiffe.ID]{}, fmt.Errorf("service account %q: want name or namespace/name", sa)
		}
		ids = append(ids, spiffe.New(td, sans, name))
	}
	return policy.SetOf(ids...), nil
}

func ipBlocks(bs []v1alpha1.IPBlock) ([]policy.IPBlock, error) {
	var out []policy.IPBlock
	for _, b := range bs {
		p, err := netip.ParsePrefix(b.CIDR)
		if err != nil {
			return nil, fmt.Errorf("cidr: %w", err)
		}
		blk := policy.IPBlock{Prefix: unmap(p).Masked()}
		for _, e := range b.Except {
			ep, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("except: %w", err)
			}
			ep = unmap(ep)
			if !blk.Prefix.Contains(ep.Addr()) || ep.Bits() < blk.Prefix.Bits() {
				return nil, fmt.Errorf("except %s not within %s", e, blk.Prefix)
			}
			blk.Except = append(blk.Except, ep.Masked())
		}
		out = append(out, blk)
	}
	return out, nil
}

// unmap turns an IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) into its
// IPv4 form, as policy.Evaluate unmaps source addresses.
func unmap(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}
