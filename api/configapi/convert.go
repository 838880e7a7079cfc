package configapi

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	pb "github.com/agentmesh/agentmesh/api/configapi/proto/agentmesh/v1"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Conversion between the Go API types and the generated protobuf messages
// (proto/agentmesh/v1/mesh.proto).
//
// From proto, the result is canonical, so that equal wire content gives
// reflect.DeepEqual values: a slice, map or byte string with no elements
// is nil; a policy.Set is the zero Set when the wire had no set and SetOf
// (members, possibly none) when it had one; Workload.Authz is nil exactly
// when the wire had none. To proto, nil and empty encode alike.
//
// Addresses are bytes, 4 or 16 (netip.AddrFrom4/AddrFrom16: no parsing, no
// allocation); the zero netip.Addr is empty bytes. An address with an IPv6
// zone cannot be encoded.
//
// Labels and named ports are lists of entries sorted by key, wire
// compatible with a protobuf map; protobuf-go handles maps by reflection,
// several times slower than these loops.
//
// Slices of one kind (workloads, their addresses, labels and Authz
// targets, services' ports and endpoints) are cut from one allocation per
// message; services' routes and traffic policies, rare and small, allocate
// as they go. A decoded message keeps string slices of the generated message
// (RemovedWorkloads, Target.PolicyRefs...) rather than copying them: the
// generated message is not used again.

// ErrInvalid is wrapped by every error about a message that breaks the
// schema: an address that is neither 4 nor 16 bytes, a port above 65535,
// a negative duration, a status code above 999, an enum value or enum
// string the schema does not define, a rate or ratio that is NaN, infinite
// or negative, a count (a limit, a burst) out of the range of the other
// side's type.
var ErrInvalid = errors.New("invalid message")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ---- Go to proto ----

func requestToProto(r *ConfigRequest) *pb.ConfigRequest {
	return &pb.ConfigRequest{Node: r.Node, Component: r.Component, AckVersion: r.AckVersion, Error: r.Error}
}

func signRequestToProto(r *SignRequest) *pb.SignRequest { return &pb.SignRequest{CsrPem: r.CSRPEM} }

func signResponseToProto(r *SignResponse) *pb.SignResponse {
	return &pb.SignResponse{ChainPem: r.ChainPEM}
}

// responseToProto converts r. The result shares r's byte and string
// slices (TrustBundlePEM, RemovedWorkloads, PolicyRefs...): it is only good
// until r changes.
func responseToProto(r *ConfigResponse) (*pb.ConfigResponse, error) {
	m := &pb.ConfigResponse{
		Version:          r.Version,
		Full:             r.Full,
		More:             r.More,
		TrustDomain:      r.TrustDomain,
		TrustBundlePem:   r.TrustBundlePEM,
		RemovedWorkloads: r.RemovedWorkloads,
		RemovedServices:  r.RemovedServices,
	}
	var e encoder
	e.reserve(r)
	var err error
	if m.Workloads, err = e.workloads(r.Workloads); err != nil {
		return nil, err
	}
	if m.Services, err = e.services(r.Services); err != nil {
		return nil, err
	}
	if m.Policies, err = e.policies(r.Policies); err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	return m, nil
}

// encoder holds the slabs the encoded addresses, labels and named ports
// are cut from.
type encoder struct {
	addrs     []byte   // address bytes
	lists     [][]byte // address lists
	labels    []pb.Label
	labelPtrs []*pb.Label
	ports     []pb.NamedPort
	portPtrs  []*pb.NamedPort
	keys      []string // scratch for sorting map keys
}

// reserve sizes the slabs for every address, label and named port of r.
func (e *encoder) reserve(r *ConfigResponse) {
	n, size, nLabels, nPorts := 0, 0, 0, 0
	count := func(ips []netip.Addr) {
		n += len(ips)
		for _, a := range ips {
			size += addrLen(a)
		}
	}
	for i := range r.Workloads {
		count(r.Workloads[i].IPs)
		nLabels += len(r.Workloads[i].Labels)
	}
	for i := range r.Services {
		s := &r.Services[i]
		count(s.VIPs)
		for j := range s.Endpoints {
			count(s.Endpoints[j].IPs)
			nPorts += len(s.Endpoints[j].Ports)
		}
	}
	e.addrs = make([]byte, 0, size)
	e.lists = make([][]byte, 0, n)
	e.labels = make([]pb.Label, nLabels)
	e.labelPtrs = make([]*pb.Label, nLabels)
	e.ports = make([]pb.NamedPort, nPorts)
	e.portPtrs = make([]*pb.NamedPort, nPorts)
}

// sortedKeys returns m's keys, sorted, in e's scratch slice.
func sortedKeys[V any](e *encoder, m map[string]V) []string {
	e.keys = e.keys[:0]
	for k := range m {
		e.keys = append(e.keys, k)
	}
	slices.Sort(e.keys)
	return e.keys
}

func (e *encoder) labelList(m map[string]string) []*pb.Label {
	if len(m) == 0 {
		return nil
	}
	n := len(m)
	if len(e.labels) < n { // m changed since reserve
		e.labels, e.labelPtrs = make([]pb.Label, n), make([]*pb.Label, n)
	}
	ls, out := e.labels[:n:n], e.labelPtrs[:n:n]
	e.labels, e.labelPtrs = e.labels[n:], e.labelPtrs[n:]
	for i, k := range sortedKeys(e, m) {
		ls[i].Key, ls[i].Value = k, m[k]
		out[i] = &ls[i]
	}
	return out
}

func (e *encoder) namedPorts(m map[string]uint16) []*pb.NamedPort {
	if len(m) == 0 {
		return nil
	}
	n := len(m)
	if len(e.ports) < n {
		e.ports, e.portPtrs = make([]pb.NamedPort, n), make([]*pb.NamedPort, n)
	}
	ps, out := e.ports[:n:n], e.portPtrs[:n:n]
	e.ports, e.portPtrs = e.ports[n:], e.portPtrs[n:]
	for i, k := range sortedKeys(e, m) {
		ps[i].Name, ps[i].Port = k, uint32(m[k])
		out[i] = &ps[i]
	}
	return out
}

func addrLen(a netip.Addr) int {
	switch {
	case a.Is4():
		return 4
	case a.Is6():
		return 16
	}
	return 0
}

// addr encodes a: 4 or 16 bytes, none for the zero Addr.
func (e *encoder) addr(a netip.Addr) ([]byte, error) {
	start := len(e.addrs)
	switch {
	case a.Is4():
		b := a.As4()
		e.addrs = append(e.addrs, b[:]...)
	case a.Is6():
		if a.Zone() != "" {
			return nil, invalid("address %s has a zone", a)
		}
		b := a.As16()
		e.addrs = append(e.addrs, b[:]...)
	default:
		return nil, nil
	}
	return e.addrs[start:len(e.addrs):len(e.addrs)], nil
}

func (e *encoder) addrList(ips []netip.Addr) ([][]byte, error) {
	if len(ips) == 0 {
		return nil, nil
	}
	start := len(e.lists)
	for _, a := range ips {
		b, err := e.addr(a)
		if err != nil {
			return nil, err
		}
		e.lists = append(e.lists, b)
	}
	return e.lists[start:len(e.lists):len(e.lists)], nil
}

func (e *encoder) workloads(ws []meshconfig.Workload) ([]*pb.Workload, error) {
	if len(ws) == 0 {
		return nil, nil
	}
	slab := make([]pb.Workload, len(ws))
	out := make([]*pb.Workload, len(ws))
	for i := range ws {
		w, m := &ws[i], &slab[i]
		m.Uid = w.UID
		m.Name = w.Name
		m.Namespace = w.Namespace
		m.ServiceAccount = w.ServiceAccount
		m.Node = w.Node
		m.Labels = e.labelList(w.Labels)
		m.Enrolled = w.Enrolled
		m.Netns = w.Netns
		m.WorkloadName = w.WorkloadName
		var err error
		if m.Ips, err = e.addrList(w.IPs); err != nil {
			return nil, fmt.Errorf("workload %s: ips: %w", w.UID, err)
		}
		if w.Authz != nil {
			if m.Authz, err = e.target(w.Authz); err != nil {
				return nil, fmt.Errorf("workload %s: authz: %w", w.UID, err)
			}
		}
		out[i] = m
	}
	return out, nil
}

func (e *encoder) services(ss []meshconfig.Service) ([]*pb.Service, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	nPorts, nEndpoints := 0, 0
	for i := range ss {
		nPorts += len(ss[i].Ports)
		nEndpoints += len(ss[i].Endpoints)
	}
	slab := make([]pb.Service, len(ss))
	out := make([]*pb.Service, len(ss))
	portSlab := make([]pb.ServicePort, nPorts)
	ports := make([]*pb.ServicePort, nPorts)
	epSlab := make([]pb.Endpoint, nEndpoints)
	eps := make([]*pb.Endpoint, nEndpoints)
	for i := range ss {
		s, m := &ss[i], &slab[i]
		m.Name = s.Name
		m.Namespace = s.Namespace
		m.ExternalName = s.ExternalName
		var err error
		if m.Vips, err = e.addrList(s.VIPs); err != nil {
			return nil, fmt.Errorf("service %s: vips: %w", s.Key(), err)
		}
		if len(s.Ports) > 0 {
			m.Ports, ports = ports[:len(s.Ports):len(s.Ports)], ports[len(s.Ports):]
			for j := range s.Ports {
				p, pm := &s.Ports[j], &portSlab[j]
				pm.Name = p.Name
				pm.Port = uint32(p.Port)
				pm.TargetPort = uint32(p.TargetPort)
				pm.AppProtocol = p.AppProtocol
				if pm.Protocol, err = protocolToProto(p.Protocol); err != nil {
					return nil, fmt.Errorf("service %s: port %d: %w", s.Key(), p.Port, err)
				}
				m.Ports[j] = pm
			}
			portSlab = portSlab[len(s.Ports):]
		}
		if len(s.Endpoints) > 0 {
			m.Endpoints, eps = eps[:len(s.Endpoints):len(s.Endpoints)], eps[len(s.Endpoints):]
			for j := range s.Endpoints {
				ep, em := &s.Endpoints[j], &epSlab[j]
				em.WorkloadUid = ep.WorkloadUID
				em.Ready = ep.Ready
				if em.Ips, err = e.addrList(ep.IPs); err != nil {
					return nil, fmt.Errorf("service %s: endpoint %d: %w", s.Key(), j, err)
				}
				em.Ports = e.namedPorts(ep.Ports)
				m.Endpoints[j] = em
			}
			epSlab = epSlab[len(s.Endpoints):]
		}
		if m.Routes, err = routesToProto(s.Routes); err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Key(), err)
		}
		if s.Traffic != nil {
			if m.Traffic, err = trafficToProto(s.Traffic); err != nil {
				return nil, fmt.Errorf("service %s: traffic policy %s: %w", s.Key(), s.Traffic.Name, err)
			}
		}
		out[i] = m
	}
	return out, nil
}

// routesToProto encodes a service's routes (few: allocated as they come).
func routesToProto(rs []meshconfig.Route) ([]*pb.Route, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	slab := make([]pb.Route, len(rs))
	out := make([]*pb.Route, len(rs))
	for i := range rs {
		if err := routeToProto(&rs[i], &slab[i]); err != nil {
			return nil, fmt.Errorf("route %d (%s rule %d): %w", i, rs[i].Name, rs[i].Rule, err)
		}
		out[i] = &slab[i]
	}
	return out, nil
}

func routeToProto(rt *meshconfig.Route, m *pb.Route) error {
	m.Name = rt.Name
	m.Kind = rt.Kind
	m.Rule = int64(rt.Rule)
	m.Port = uint32(rt.Port)
	var err error
	if m.Match, err = routeMatchToProto(&rt.Match); err != nil {
		return err
	}
	if len(rt.Backends) > 0 {
		bs := make([]pb.Backend, len(rt.Backends))
		m.Backends = make([]*pb.Backend, len(rt.Backends))
		for i, b := range rt.Backends {
			bs[i].Service, bs[i].Port, bs[i].Weight = b.Service, uint32(b.Port), b.Weight
			m.Backends[i] = &bs[i]
		}
	}
	if m.TimeoutNs, err = durationToProto(rt.Timeout); err != nil {
		return fmt.Errorf("timeout: %w", err)
	}
	if m.BackendTimeoutNs, err = durationToProto(rt.BackendTimeout); err != nil {
		return fmt.Errorf("backend timeout: %w", err)
	}
	if r := rt.Retry; r != nil {
		m.Retry = &pb.Retry{}
		if r.Attempts < 0 || int64(r.Attempts) > math.MaxUint32 {
			return invalid("retry attempts %d out of range", r.Attempts)
		}
		m.Retry.Attempts = uint32(r.Attempts)
		if len(r.Codes) > 0 {
			m.Retry.Codes = make([]uint32, len(r.Codes))
			for i, c := range r.Codes {
				if c < 0 || c > maxStatusCode {
					return invalid("retry code %d out of range", c)
				}
				m.Retry.Codes[i] = uint32(c)
			}
		}
		if m.Retry.BackoffNs, err = durationToProto(r.Backoff); err != nil {
			return fmt.Errorf("retry backoff: %w", err)
		}
	}
	return nil
}

// routeMatchToProto encodes m; nil for the zero RouteMatch (every request).
func routeMatchToProto(m *meshconfig.RouteMatch) (*pb.RouteMatch, error) {
	if m.PathType == "" && m.Path == "" && m.Method == "" && len(m.Headers) == 0 && len(m.Query) == 0 {
		return nil, nil
	}
	pt, err := pathMatchTypeToProto(m.PathType)
	if err != nil {
		return nil, err
	}
	return &pb.RouteMatch{
		PathType: pt,
		Path:     m.Path,
		Method:   m.Method,
		Headers:  valueMatchesToProto(m.Headers),
		Query:    valueMatchesToProto(m.Query),
	}, nil
}

func valueMatchesToProto(vs []meshconfig.ValueMatch) []*pb.ValueMatch {
	if len(vs) == 0 {
		return nil
	}
	slab := make([]pb.ValueMatch, len(vs))
	out := make([]*pb.ValueMatch, len(vs))
	for i, v := range vs {
		slab[i].Name, slab[i].Value, slab[i].Regex = v.Name, v.Value, v.Regex
		out[i] = &slab[i]
	}
	return out
}

// durationToProto is d in nanoseconds; a negative d is an error.
func durationToProto(d time.Duration) (int64, error) {
	if d < 0 {
		return 0, invalid("negative duration %s", d)
	}
	return int64(d), nil
}

// trafficToProto encodes a service's traffic policy (rare and small:
// allocated as it goes). A part tp has (a non-nil pointer) is present in
// the message, even empty, and one it lacks is absent, so that the
// decoder gives the same pointers back; Affinity's key, a value, is
// absent when zero.
func trafficToProto(tp *meshconfig.TrafficPolicy) (*pb.TrafficPolicy, error) {
	m := &pb.TrafficPolicy{Name: tp.Name}
	var err error
	if lb := tp.LoadBalancer; lb != nil {
		m.LoadBalancer = &pb.LoadBalancer{}
		if m.LoadBalancer.Algorithm, err = lbAlgorithmToProto(lb.Algorithm); err != nil {
			return nil, fmt.Errorf("load balancer: %w", err)
		}
		if lb.Hash != nil {
			m.LoadBalancer.Hash = hashKeyToProto(lb.Hash)
		}
	}
	if a := tp.Affinity; a != nil {
		m.Affinity = &pb.Affinity{}
		if a.Key != (meshconfig.HashKey{}) {
			m.Affinity.Key = hashKeyToProto(&a.Key)
		}
	}
	if t := tp.Timeouts; t != nil {
		mt := &pb.Timeouts{}
		if mt.ConnectNs, err = durationToProto(t.Connect); err != nil {
			return nil, fmt.Errorf("timeouts: connect: %w", err)
		}
		if mt.FirstByteNs, err = durationToProto(t.FirstByte); err != nil {
			return nil, fmt.Errorf("timeouts: first byte: %w", err)
		}
		if mt.IdleNs, err = durationToProto(t.Idle); err != nil {
			return nil, fmt.Errorf("timeouts: idle: %w", err)
		}
		if mt.TotalNs, err = durationToProto(t.Total); err != nil {
			return nil, fmt.Errorf("timeouts: total: %w", err)
		}
		m.Timeouts = mt
	}
	if b := tp.RetryBudget; b != nil {
		mb := &pb.RetryBudget{}
		if mb.Ratio, err = checkRate(b.Ratio); err != nil {
			return nil, fmt.Errorf("retry budget: ratio: %w", err)
		}
		if mb.MinPerSecond, err = countToProto(b.MinPerSecond); err != nil {
			return nil, fmt.Errorf("retry budget: minimum per second: %w", err)
		}
		m.RetryBudget = mb
	}
	if b := tp.RetryBackoff; b != nil {
		mb := &pb.RetryBackoff{}
		if mb.BaseNs, err = durationToProto(b.Base); err != nil {
			return nil, fmt.Errorf("retry backoff: base: %w", err)
		}
		if mb.MaxNs, err = durationToProto(b.Max); err != nil {
			return nil, fmt.Errorf("retry backoff: max: %w", err)
		}
		m.RetryBackoff = mb
	}
	if b := tp.Breaker; b != nil {
		mb := &pb.Breaker{}
		if mb.MaxConnections, err = countToProto(b.MaxConnections); err != nil {
			return nil, fmt.Errorf("breaker: max connections: %w", err)
		}
		if mb.MaxPendingRequests, err = countToProto(b.MaxPendingRequests); err != nil {
			return nil, fmt.Errorf("breaker: max pending requests: %w", err)
		}
		if mb.MaxRequests, err = countToProto(b.MaxRequests); err != nil {
			return nil, fmt.Errorf("breaker: max requests: %w", err)
		}
		if mb.MaxRequestsPerEndpoint, err = countToProto(b.MaxRequestsPerEndpoint); err != nil {
			return nil, fmt.Errorf("breaker: max requests per endpoint: %w", err)
		}
		m.Breaker = mb
	}
	if o := tp.Outlier; o != nil {
		mo := &pb.Outlier{}
		if mo.ConsecutiveFailures, err = countToProto(o.ConsecutiveFailures); err != nil {
			return nil, fmt.Errorf("outlier: consecutive failures: %w", err)
		}
		if mo.BaseEjectionNs, err = durationToProto(o.BaseEjection); err != nil {
			return nil, fmt.Errorf("outlier: base ejection: %w", err)
		}
		if mo.MaxEjectionNs, err = durationToProto(o.MaxEjection); err != nil {
			return nil, fmt.Errorf("outlier: max ejection: %w", err)
		}
		if mo.MaxEjectedPercent, err = countToProto(o.MaxEjectedPercent); err != nil {
			return nil, fmt.Errorf("outlier: max ejected percent: %w", err)
		}
		m.Outlier = mo
	}
	if rl := tp.RateLimit; rl != nil {
		mr := &pb.RateLimit{}
		if rl.PerEndpoint != nil {
			if mr.PerEndpoint, err = bucketToProto(*rl.PerEndpoint); err != nil {
				return nil, fmt.Errorf("rate limit: per endpoint: %w", err)
			}
		}
		if rl.PerSource != nil {
			if mr.PerSource, err = bucketToProto(*rl.PerSource); err != nil {
				return nil, fmt.Errorf("rate limit: per source: %w", err)
			}
		}
		if len(rl.Tools) > 0 {
			mr.Tools = make(map[string]*pb.Bucket, len(rl.Tools))
			for name, b := range rl.Tools {
				if mr.Tools[name], err = bucketToProto(b); err != nil {
					return nil, fmt.Errorf("rate limit: tool %q: %w", name, err)
				}
			}
		}
		m.RateLimit = mr
	}
	return m, nil
}

func hashKeyToProto(k *meshconfig.HashKey) *pb.HashKey {
	return &pb.HashKey{Header: k.Header, Cookie: k.Cookie, ContextId: k.ContextID}
}

func bucketToProto(b meshconfig.Bucket) (*pb.Bucket, error) {
	m := &pb.Bucket{}
	var err error
	if m.Rate, err = checkRate(b.Rate); err != nil {
		return nil, err
	}
	if m.Burst, err = countToProto(b.Burst); err != nil {
		return nil, fmt.Errorf("burst: %w", err)
	}
	return m, nil
}

// checkRate checks a rate or ratio, both ways: the wire's doubles are
// finite and not negative (NaN would not even equal itself once decoded).
func checkRate(v float64) (float64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, invalid("rate %v: want a finite number >= 0", v)
	}
	return v, nil
}

// countToProto is a count (a limit, a burst) as a uint32; a negative one,
// or one above the uint32 range, is an error.
func countToProto(n int) (uint32, error) {
	if n < 0 || uint64(n) > math.MaxUint32 {
		return 0, invalid("count %d out of range", n)
	}
	return uint32(n), nil
}

func lbAlgorithmToProto(a string) (pb.LoadBalancerAlgorithm, error) {
	switch a {
	case "":
		return pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_UNSPECIFIED, nil
	case meshconfig.LBPeakEWMA:
		return pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_PEAK_EWMA, nil
	case meshconfig.LBRoundRobin:
		return pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_ROUND_ROBIN, nil
	case meshconfig.LBLeastRequest:
		return pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_LEAST_REQUEST, nil
	case meshconfig.LBConsistentHash:
		return pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_CONSISTENT_HASH, nil
	}
	return 0, invalid("unknown load balancer algorithm %q", a)
}

func pathMatchTypeToProto(t string) (pb.PathMatchType, error) {
	switch t {
	case "":
		return pb.PathMatchType_PATH_MATCH_TYPE_UNSPECIFIED, nil
	case meshconfig.PathExact:
		return pb.PathMatchType_PATH_MATCH_TYPE_EXACT, nil
	case meshconfig.PathPrefix:
		return pb.PathMatchType_PATH_MATCH_TYPE_PATH_PREFIX, nil
	case meshconfig.PathRegex:
		return pb.PathMatchType_PATH_MATCH_TYPE_REGULAR_EXPRESSION, nil
	}
	return 0, invalid("unknown path match type %q", t)
}

func (e *encoder) target(t *policy.Target) (*pb.Target, error) {
	m := &pb.Target{PolicyRefs: t.PolicyRefs}
	var err error
	if m.MtlsMode, err = mtlsModeToProto(t.MTLSMode); err != nil {
		return nil, err
	}
	if m.DefaultAction, err = actionToProto(t.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	if m.Policies, err = e.policies(t.Policies); err != nil {
		return nil, err
	}
	if len(t.ProbePorts) > 0 {
		m.ProbePorts = make([]uint32, len(t.ProbePorts))
		for i, p := range t.ProbePorts {
			m.ProbePorts[i] = uint32(p)
		}
	}
	return m, nil
}

func (e *encoder) policies(ps []policy.Policy) ([]*pb.Policy, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	slab := make([]pb.Policy, len(ps))
	out := make([]*pb.Policy, len(ps))
	for i := range ps {
		p, m := &ps[i], &slab[i]
		m.Namespace = p.Namespace
		m.Name = p.Name
		var err error
		if m.Action, err = actionToProto(p.Action); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Key(), err)
		}
		if len(p.Rules) > 0 {
			rules := make([]pb.Rule, len(p.Rules))
			m.Rules = make([]*pb.Rule, len(p.Rules))
			for j := range p.Rules {
				if err := e.rule(&p.Rules[j], &rules[j]); err != nil {
					return nil, fmt.Errorf("policy %s: rule %d: %w", p.Key(), j, err)
				}
				m.Rules[j] = &rules[j]
			}
		}
		out[i] = m
	}
	return out, nil
}

func (e *encoder) rule(r *policy.Rule, m *pb.Rule) error {
	m.Index = int64(r.Index)
	m.L7 = r.L7
	if r.HTTP != nil {
		m.Http = &pb.HTTPMatch{Methods: r.HTTP.Methods, Paths: r.HTTP.Paths}
	}
	if r.JSONRPC != nil {
		m.Jsonrpc = &pb.JSONRPCMatch{Methods: r.JSONRPC.Methods}
	}
	if r.MCP != nil {
		m.Mcp = &pb.MCPMatch{Tools: r.MCP.Tools}
	}
	if len(r.From) > 0 {
		peers := make([]pb.Peer, len(r.From))
		m.From = make([]*pb.Peer, len(r.From))
		for i := range r.From {
			if err := peerToProto(&r.From[i], &peers[i]); err != nil {
				return fmt.Errorf("from %d: %w", i, err)
			}
			m.From[i] = &peers[i]
		}
	}
	if len(r.Ports) > 0 {
		ranges := make([]pb.PortRange, len(r.Ports))
		m.Ports = make([]*pb.PortRange, len(r.Ports))
		for i, pr := range r.Ports {
			ranges[i].From, ranges[i].To = uint32(pr.From), uint32(pr.To)
			m.Ports[i] = &ranges[i]
		}
	}
	return nil
}

// peerToProto writes p's sets sorted, so that equal peers encode alike.
func peerToProto(p *policy.Peer, m *pb.Peer) error {
	if !p.Identities.Any() {
		ids := slices.SortedFunc(p.Identities.All(), compareIDs)
		slab := make([]pb.SpiffeID, len(ids))
		m.Identities = &pb.IdentitySet{Ids: make([]*pb.SpiffeID, len(ids))}
		for i, id := range ids {
			slab[i].TrustDomain, slab[i].Namespace, slab[i].ServiceAccount = id.TrustDomain, id.Namespace, id.ServiceAccount
			m.Identities.Ids[i] = &slab[i]
		}
	}
	m.Namespaces = stringSetToProto(p.Namespaces)
	m.Workloads = stringSetToProto(p.Workloads)
	if len(p.IPBlocks) > 0 {
		blocks := make([]pb.IPBlock, len(p.IPBlocks))
		m.IpBlocks = make([]*pb.IPBlock, len(p.IPBlocks))
		for i := range p.IPBlocks {
			b := &p.IPBlocks[i]
			var err error
			if blocks[i].Prefix, err = prefixToProto(b.Prefix); err != nil {
				return fmt.Errorf("ip block %d: %w", i, err)
			}
			if len(b.Except) > 0 {
				blocks[i].Except = make([]*pb.Prefix, len(b.Except))
				for j, x := range b.Except {
					if blocks[i].Except[j], err = prefixToProto(x); err != nil {
						return fmt.Errorf("ip block %d: except %d: %w", i, j, err)
					}
				}
			}
			m.IpBlocks[i] = &blocks[i]
		}
	}
	return nil
}

func compareIDs(a, b spiffe.ID) int {
	return cmp.Or(cmp.Compare(a.TrustDomain, b.TrustDomain), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.ServiceAccount, b.ServiceAccount))
}

func stringSetToProto(s policy.Set[string]) *pb.StringSet {
	if s.Any() {
		return nil
	}
	return &pb.StringSet{Values: slices.Sorted(s.All())}
}

// prefixToProto encodes p; nil for the zero Prefix.
func prefixToProto(p netip.Prefix) (*pb.Prefix, error) {
	if p == (netip.Prefix{}) {
		return nil, nil
	}
	if !p.IsValid() {
		return nil, invalid("invalid prefix %s", p)
	}
	a := p.Addr()
	var b []byte
	if a.Is4() {
		v := a.As4()
		b = v[:]
	} else {
		v := a.As16()
		b = v[:]
	}
	return &pb.Prefix{Addr: b, Bits: uint32(p.Bits())}, nil
}

func actionToProto(a policy.Action) (pb.Action, error) {
	switch a {
	case "":
		return pb.Action_ACTION_UNSPECIFIED, nil
	case policy.ActionAllow:
		return pb.Action_ACTION_ALLOW, nil
	case policy.ActionDeny:
		return pb.Action_ACTION_DENY, nil
	}
	return 0, invalid("unknown action %q", a)
}

func mtlsModeToProto(m policy.MTLSMode) (pb.MtlsMode, error) {
	switch m {
	case "":
		return pb.MtlsMode_MTLS_MODE_UNSPECIFIED, nil
	case policy.MTLSStrict:
		return pb.MtlsMode_MTLS_MODE_STRICT, nil
	case policy.MTLSPermissive:
		return pb.MtlsMode_MTLS_MODE_PERMISSIVE, nil
	}
	return 0, invalid("unknown mtls mode %q", m)
}

func protocolToProto(p string) (pb.Protocol, error) {
	switch p {
	case "":
		return pb.Protocol_PROTOCOL_UNSPECIFIED, nil
	case "TCP":
		return pb.Protocol_PROTOCOL_TCP, nil
	case "UDP":
		return pb.Protocol_PROTOCOL_UDP, nil
	case "SCTP":
		return pb.Protocol_PROTOCOL_SCTP, nil
	}
	return 0, invalid("unknown protocol %q", p)
}

// ---- proto to Go ----

func requestFromProto(m *pb.ConfigRequest) ConfigRequest {
	return ConfigRequest{Node: m.GetNode(), Component: m.GetComponent(), AckVersion: m.GetAckVersion(), Error: m.GetError()}
}

func signRequestFromProto(m *pb.SignRequest) SignRequest {
	return SignRequest{CSRPEM: nilIfEmpty(m.GetCsrPem())}
}

func signResponseFromProto(m *pb.SignResponse) SignResponse {
	return SignResponse{ChainPEM: nilIfEmpty(m.GetChainPem())}
}

// responseFromProto converts m, taking over its maps and slices. The codec
// decodes without it (decodeResponse, decode.go); it is the reference
// decodeResponse is tested against.
func responseFromProto(m *pb.ConfigResponse) (ConfigResponse, error) {
	r := ConfigResponse{
		Version:          m.GetVersion(),
		Full:             m.GetFull(),
		More:             m.GetMore(),
		TrustDomain:      m.GetTrustDomain(),
		TrustBundlePEM:   nilIfEmpty(m.GetTrustBundlePem()),
		RemovedWorkloads: nilIfEmpty(m.GetRemovedWorkloads()),
		RemovedServices:  nilIfEmpty(m.GetRemovedServices()),
	}
	var d decoder
	d.reserve(m)
	var err error
	if r.Workloads, err = d.workloads(m.GetWorkloads()); err != nil {
		return ConfigResponse{}, err
	}
	if r.Services, err = d.services(m.GetServices()); err != nil {
		return ConfigResponse{}, err
	}
	if r.Policies, err = policiesFromProto(m.GetPolicies()); err != nil {
		return ConfigResponse{}, fmt.Errorf("policies: %w", err)
	}
	return r, nil
}

func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}

// decoder holds the slab the decoded addresses are cut from.
type decoder struct{ addrs []netip.Addr }

func (d *decoder) reserve(m *pb.ConfigResponse) {
	n := 0
	for _, w := range m.GetWorkloads() {
		n += len(w.GetIps())
	}
	for _, s := range m.GetServices() {
		n += len(s.GetVips())
		for _, ep := range s.GetEndpoints() {
			n += len(ep.GetIps())
		}
	}
	d.addrs = make([]netip.Addr, 0, n)
}

// addrFromBytes decodes an address: 4 or 16 bytes, or none for the zero Addr.
func addrFromBytes(b []byte) (netip.Addr, error) {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)), nil
	case 16:
		return netip.AddrFrom16([16]byte(b)), nil
	case 0:
		return netip.Addr{}, nil
	}
	return netip.Addr{}, invalid("address of %d bytes", len(b))
}

func (d *decoder) addrList(bs [][]byte) ([]netip.Addr, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	start := len(d.addrs)
	for i, b := range bs {
		a, err := addrFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("address %d: %w", i, err)
		}
		d.addrs = append(d.addrs, a)
	}
	return d.addrs[start:len(d.addrs):len(d.addrs)], nil
}

func (d *decoder) workloads(ms []*pb.Workload) ([]meshconfig.Workload, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	nAuthz := 0
	for _, m := range ms {
		if m.GetAuthz() != nil {
			nAuthz++
		}
	}
	ws := make([]meshconfig.Workload, len(ms))
	targets := make([]policy.Target, nAuthz)
	for i, m := range ms {
		w := &ws[i]
		w.UID = m.GetUid()
		w.Name = m.GetName()
		w.Namespace = m.GetNamespace()
		w.ServiceAccount = m.GetServiceAccount()
		w.Node = m.GetNode()
		w.Enrolled = m.GetEnrolled()
		w.Netns = m.GetNetns()
		w.WorkloadName = m.GetWorkloadName()
		if ls := m.GetLabels(); len(ls) > 0 {
			w.Labels = make(map[string]string, len(ls))
			for _, l := range ls {
				w.Labels[l.GetKey()] = l.GetValue()
			}
		}
		var err error
		if w.IPs, err = d.addrList(m.GetIps()); err != nil {
			return nil, fmt.Errorf("workload %d (%s): ips: %w", i, w.UID, err)
		}
		if a := m.GetAuthz(); a != nil {
			t := &targets[0]
			targets = targets[1:]
			if err := targetFromProto(a, t); err != nil {
				return nil, fmt.Errorf("workload %d (%s): authz: %w", i, w.UID, err)
			}
			w.Authz = t
		}
	}
	return ws, nil
}

func (d *decoder) services(ms []*pb.Service) ([]meshconfig.Service, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	nPorts, nEndpoints := 0, 0
	for _, m := range ms {
		nPorts += len(m.GetPorts())
		nEndpoints += len(m.GetEndpoints())
	}
	ss := make([]meshconfig.Service, len(ms))
	ports := make([]meshconfig.ServicePort, nPorts)
	eps := make([]meshconfig.Endpoint, nEndpoints)
	for i, m := range ms {
		s := &ss[i]
		s.Name = m.GetName()
		s.Namespace = m.GetNamespace()
		s.ExternalName = m.GetExternalName()
		var err error
		if s.VIPs, err = d.addrList(m.GetVips()); err != nil {
			return nil, fmt.Errorf("service %d (%s): vips: %w", i, s.Key(), err)
		}
		if mp := m.GetPorts(); len(mp) > 0 {
			s.Ports, ports = ports[:len(mp):len(mp)], ports[len(mp):]
			for j, pm := range mp {
				if err := servicePortFromProto(pm, &s.Ports[j]); err != nil {
					return nil, fmt.Errorf("service %d (%s): port %d: %w", i, s.Key(), j, err)
				}
			}
		}
		if me := m.GetEndpoints(); len(me) > 0 {
			s.Endpoints, eps = eps[:len(me):len(me)], eps[len(me):]
			for j, em := range me {
				if err := d.endpoint(em, &s.Endpoints[j]); err != nil {
					return nil, fmt.Errorf("service %d (%s): endpoint %d: %w", i, s.Key(), j, err)
				}
			}
		}
		if mr := m.GetRoutes(); len(mr) > 0 {
			s.Routes = make([]meshconfig.Route, len(mr))
			for j, rm := range mr {
				if err := routeFromProto(rm, &s.Routes[j]); err != nil {
					return nil, fmt.Errorf("service %d (%s): route %d: %w", i, s.Key(), j, err)
				}
			}
		}
		if tm := m.GetTraffic(); tm != nil {
			if s.Traffic, err = trafficFromProto(tm); err != nil {
				return nil, fmt.Errorf("service %d (%s): traffic policy %s: %w", i, s.Key(), tm.GetName(), err)
			}
		}
	}
	return ss, nil
}

// routeFromProto converts one Service.routes entry into *rt (the zero
// Route). decodeResponse uses it too, on routes it unmarshals with
// protobuf-go.
func routeFromProto(m *pb.Route, rt *meshconfig.Route) error {
	rt.Name = m.GetName()
	rt.Kind = m.GetKind()
	rule := m.GetRule()
	if int64(int(rule)) != rule {
		return invalid("rule %d out of range", rule)
	}
	rt.Rule = int(rule)
	var err error
	if rt.Port, err = portFromProto(m.GetPort()); err != nil {
		return err
	}
	if mm := m.GetMatch(); mm != nil {
		match := &rt.Match
		if match.PathType, err = pathMatchTypeFromProto(mm.GetPathType()); err != nil {
			return err
		}
		match.Path = mm.GetPath()
		match.Method = mm.GetMethod()
		match.Headers = valueMatchesFromProto(mm.GetHeaders())
		match.Query = valueMatchesFromProto(mm.GetQuery())
	}
	if mb := m.GetBackends(); len(mb) > 0 {
		rt.Backends = make([]meshconfig.Backend, len(mb))
		for i, bm := range mb {
			b := &rt.Backends[i]
			b.Service = bm.GetService()
			b.Weight = bm.GetWeight()
			if b.Port, err = portFromProto(bm.GetPort()); err != nil {
				return fmt.Errorf("backend %d (%s): %w", i, b.Service, err)
			}
		}
	}
	if rt.Timeout, err = durationFromProto(m.GetTimeoutNs()); err != nil {
		return fmt.Errorf("timeout: %w", err)
	}
	if rt.BackendTimeout, err = durationFromProto(m.GetBackendTimeoutNs()); err != nil {
		return fmt.Errorf("backend timeout: %w", err)
	}
	if rm := m.GetRetry(); rm != nil {
		attempts := rm.GetAttempts()
		if uint64(attempts) > math.MaxInt { // a 32-bit int
			return invalid("retry attempts %d out of range", attempts)
		}
		r := &meshconfig.Retry{Attempts: int(attempts)}
		if cs := rm.GetCodes(); len(cs) > 0 {
			r.Codes = make([]int, len(cs))
			for i, c := range cs {
				if c > maxStatusCode {
					return invalid("retry code %d out of range", c)
				}
				r.Codes[i] = int(c)
			}
		}
		if r.Backoff, err = durationFromProto(rm.GetBackoffNs()); err != nil {
			return fmt.Errorf("retry backoff: %w", err)
		}
		rt.Retry = r
	}
	return nil
}

// trafficFromProto converts Service.traffic: a part present in m, even
// empty, is a non-nil pointer, an absent one nil. decodeResponse uses it
// too, on the traffic policy it unmarshals with protobuf-go.
func trafficFromProto(m *pb.TrafficPolicy) (*meshconfig.TrafficPolicy, error) {
	tp := &meshconfig.TrafficPolicy{Name: m.GetName()}
	var err error
	if lm := m.GetLoadBalancer(); lm != nil {
		lb := &meshconfig.LoadBalancer{}
		if lb.Algorithm, err = lbAlgorithmFromProto(lm.GetAlgorithm()); err != nil {
			return nil, fmt.Errorf("load balancer: %w", err)
		}
		if hm := lm.GetHash(); hm != nil {
			k := hashKeyFromProto(hm)
			lb.Hash = &k
		}
		tp.LoadBalancer = lb
	}
	if am := m.GetAffinity(); am != nil {
		tp.Affinity = &meshconfig.Affinity{Key: hashKeyFromProto(am.GetKey())}
	}
	if tm := m.GetTimeouts(); tm != nil {
		t := &meshconfig.Timeouts{}
		if t.Connect, err = durationFromProto(tm.GetConnectNs()); err != nil {
			return nil, fmt.Errorf("timeouts: connect: %w", err)
		}
		if t.FirstByte, err = durationFromProto(tm.GetFirstByteNs()); err != nil {
			return nil, fmt.Errorf("timeouts: first byte: %w", err)
		}
		if t.Idle, err = durationFromProto(tm.GetIdleNs()); err != nil {
			return nil, fmt.Errorf("timeouts: idle: %w", err)
		}
		if t.Total, err = durationFromProto(tm.GetTotalNs()); err != nil {
			return nil, fmt.Errorf("timeouts: total: %w", err)
		}
		tp.Timeouts = t
	}
	if bm := m.GetRetryBudget(); bm != nil {
		b := &meshconfig.RetryBudget{}
		if b.Ratio, err = checkRate(bm.GetRatio()); err != nil {
			return nil, fmt.Errorf("retry budget: ratio: %w", err)
		}
		if b.MinPerSecond, err = countFromProto(bm.GetMinPerSecond()); err != nil {
			return nil, fmt.Errorf("retry budget: minimum per second: %w", err)
		}
		tp.RetryBudget = b
	}
	if bm := m.GetRetryBackoff(); bm != nil {
		b := &meshconfig.RetryBackoff{}
		if b.Base, err = durationFromProto(bm.GetBaseNs()); err != nil {
			return nil, fmt.Errorf("retry backoff: base: %w", err)
		}
		if b.Max, err = durationFromProto(bm.GetMaxNs()); err != nil {
			return nil, fmt.Errorf("retry backoff: max: %w", err)
		}
		tp.RetryBackoff = b
	}
	if bm := m.GetBreaker(); bm != nil {
		b := &meshconfig.Breaker{}
		if b.MaxConnections, err = countFromProto(bm.GetMaxConnections()); err != nil {
			return nil, fmt.Errorf("breaker: max connections: %w", err)
		}
		if b.MaxPendingRequests, err = countFromProto(bm.GetMaxPendingRequests()); err != nil {
			return nil, fmt.Errorf("breaker: max pending requests: %w", err)
		}
		if b.MaxRequests, err = countFromProto(bm.GetMaxRequests()); err != nil {
			return nil, fmt.Errorf("breaker: max requests: %w", err)
		}
		if b.MaxRequestsPerEndpoint, err = countFromProto(bm.GetMaxRequestsPerEndpoint()); err != nil {
			return nil, fmt.Errorf("breaker: max requests per endpoint: %w", err)
		}
		tp.Breaker = b
	}
	if om := m.GetOutlier(); om != nil {
		o := &meshconfig.Outlier{}
		if o.ConsecutiveFailures, err = countFromProto(om.GetConsecutiveFailures()); err != nil {
			return nil, fmt.Errorf("outlier: consecutive failures: %w", err)
		}
		if o.BaseEjection, err = durationFromProto(om.GetBaseEjectionNs()); err != nil {
			return nil, fmt.Errorf("outlier: base ejection: %w", err)
		}
		if o.MaxEjection, err = durationFromProto(om.GetMaxEjectionNs()); err != nil {
			return nil, fmt.Errorf("outlier: max ejection: %w", err)
		}
		if o.MaxEjectedPercent, err = countFromProto(om.GetMaxEjectedPercent()); err != nil {
			return nil, fmt.Errorf("outlier: max ejected percent: %w", err)
		}
		tp.Outlier = o
	}
	if rm := m.GetRateLimit(); rm != nil {
		rl := &meshconfig.RateLimit{}
		if bm := rm.GetPerEndpoint(); bm != nil {
			b, err := bucketFromProto(bm)
			if err != nil {
				return nil, fmt.Errorf("rate limit: per endpoint: %w", err)
			}
			rl.PerEndpoint = &b
		}
		if bm := rm.GetPerSource(); bm != nil {
			b, err := bucketFromProto(bm)
			if err != nil {
				return nil, fmt.Errorf("rate limit: per source: %w", err)
			}
			rl.PerSource = &b
		}
		if tools := rm.GetTools(); len(tools) > 0 {
			rl.Tools = make(map[string]meshconfig.Bucket, len(tools))
			for name, bm := range tools {
				if rl.Tools[name], err = bucketFromProto(bm); err != nil {
					return nil, fmt.Errorf("rate limit: tool %q: %w", name, err)
				}
			}
		}
		tp.RateLimit = rl
	}
	return tp, nil
}

// hashKeyFromProto decodes a hash key; an absent one is the zero HashKey.
func hashKeyFromProto(m *pb.HashKey) meshconfig.HashKey {
	return meshconfig.HashKey{Header: m.GetHeader(), Cookie: m.GetCookie(), ContextID: m.GetContextId()}
}

// bucketFromProto decodes a bucket; a nil one (a map entry without a
// value) is the zero Bucket.
func bucketFromProto(m *pb.Bucket) (meshconfig.Bucket, error) {
	rate, err := checkRate(m.GetRate())
	if err != nil {
		return meshconfig.Bucket{}, err
	}
	burst, err := countFromProto(m.GetBurst())
	if err != nil {
		return meshconfig.Bucket{}, fmt.Errorf("burst: %w", err)
	}
	return meshconfig.Bucket{Rate: rate, Burst: burst}, nil
}

// countFromProto decodes a count; one above the int range (of a 32-bit
// node) is invalid.
func countFromProto(v uint32) (int, error) {
	if uint64(v) > math.MaxInt {
		return 0, invalid("count %d out of range", v)
	}
	return int(v), nil
}

func lbAlgorithmFromProto(a pb.LoadBalancerAlgorithm) (string, error) {
	switch a {
	case pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_UNSPECIFIED:
		return "", nil
	case pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_PEAK_EWMA:
		return meshconfig.LBPeakEWMA, nil
	case pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_ROUND_ROBIN:
		return meshconfig.LBRoundRobin, nil
	case pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_LEAST_REQUEST:
		return meshconfig.LBLeastRequest, nil
	case pb.LoadBalancerAlgorithm_LOAD_BALANCER_ALGORITHM_CONSISTENT_HASH:
		return meshconfig.LBConsistentHash, nil
	}
	return "", invalid("unknown load balancer algorithm %d", a)
}

// maxStatusCode bounds Retry.codes: an HTTP status code has three digits
// (meshconfig's validation narrows them to 400-599).
const maxStatusCode = 999

func valueMatchesFromProto(ms []*pb.ValueMatch) []meshconfig.ValueMatch {
	if len(ms) == 0 {
		return nil
	}
	vs := make([]meshconfig.ValueMatch, len(ms))
	for i, m := range ms {
		vs[i] = meshconfig.ValueMatch{Name: m.GetName(), Value: m.GetValue(), Regex: m.GetRegex()}
	}
	return vs
}

// durationFromProto decodes nanoseconds; negative ones are invalid.
func durationFromProto(ns int64) (time.Duration, error) {
	if ns < 0 {
		return 0, invalid("negative duration %d ns", ns)
	}
	return time.Duration(ns), nil
}

func pathMatchTypeFromProto(t pb.PathMatchType) (string, error) {
	switch t {
	case pb.PathMatchType_PATH_MATCH_TYPE_UNSPECIFIED:
		return "", nil
	case pb.PathMatchType_PATH_MATCH_TYPE_EXACT:
		return meshconfig.PathExact, nil
	case pb.PathMatchType_PATH_MATCH_TYPE_PATH_PREFIX:
		return meshconfig.PathPrefix, nil
	case pb.PathMatchType_PATH_MATCH_TYPE_REGULAR_EXPRESSION:
		return meshconfig.PathRegex, nil
	}
	return "", invalid("unknown path match type %d", t)
}

func servicePortFromProto(m *pb.ServicePort, p *meshconfig.ServicePort) error {
	var err error
	p.Name = m.GetName()
	p.AppProtocol = m.GetAppProtocol()
	if p.Port, err = portFromProto(m.GetPort()); err != nil {
		return err
	}
	if p.TargetPort, err = portFromProto(m.GetTargetPort()); err != nil {
		return fmt.Errorf("target port: %w", err)
	}
	p.Protocol, err = protocolFromProto(m.GetProtocol())
	return err
}

func (d *decoder) endpoint(m *pb.Endpoint, ep *meshconfig.Endpoint) error {
	ep.WorkloadUID = m.GetWorkloadUid()
	ep.Ready = m.GetReady()
	var err error
	if ep.IPs, err = d.addrList(m.GetIps()); err != nil {
		return err
	}
	if mp := m.GetPorts(); len(mp) > 0 {
		ep.Ports = make(map[string]uint16, len(mp))
		for _, np := range mp {
			if ep.Ports[np.GetName()], err = portFromProto(np.GetPort()); err != nil {
				return fmt.Errorf("port %q: %w", np.GetName(), err)
			}
		}
	}
	return nil
}

func portFromProto(v uint32) (uint16, error) {
	if v > math.MaxUint16 {
		return 0, invalid("port %d out of range", v)
	}
	return uint16(v), nil
}

func targetFromProto(m *pb.Target, t *policy.Target) error {
	var err error
	if t.MTLSMode, err = mtlsModeFromProto(m.GetMtlsMode()); err != nil {
		return err
	}
	if t.Default, err = actionFromProto(m.GetDefaultAction()); err != nil {
		return fmt.Errorf("default: %w", err)
	}
	if t.Policies, err = policiesFromProto(m.GetPolicies()); err != nil {
		return err
	}
	t.PolicyRefs = nilIfEmpty(m.GetPolicyRefs())
	if pp := m.GetProbePorts(); len(pp) > 0 {
		t.ProbePorts = make([]uint16, len(pp))
		for i, v := range pp {
			if t.ProbePorts[i], err = portFromProto(v); err != nil {
				return fmt.Errorf("probe port: %w", err)
			}
		}
	}
	return nil
}

func policiesFromProto(ms []*pb.Policy) ([]policy.Policy, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	ps := make([]policy.Policy, len(ms))
	for i, m := range ms {
		p := &ps[i]
		p.Namespace = m.GetNamespace()
		p.Name = m.GetName()
		var err error
		if p.Action, err = actionFromProto(m.GetAction()); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Key(), err)
		}
		if mr := m.GetRules(); len(mr) > 0 {
			p.Rules = make([]policy.Rule, len(mr))
			for j, rm := range mr {
				if err := ruleFromProto(rm, &p.Rules[j]); err != nil {
					return nil, fmt.Errorf("policy %s: rule %d: %w", p.Key(), j, err)
				}
			}
		}
	}
	return ps, nil
}

func ruleFromProto(m *pb.Rule, r *policy.Rule) error {
	idx := m.GetIndex()
	if int64(int(idx)) != idx {
		return invalid("index %d out of range", idx)
	}
	r.Index = int(idx)
	r.L7 = m.GetL7()
	if h := m.GetHttp(); h != nil {
		r.HTTP = &policy.HTTPMatch{Methods: nonEmpty(h.GetMethods()), Paths: nonEmpty(h.GetPaths())}
	}
	if j := m.GetJsonrpc(); j != nil {
		r.JSONRPC = &policy.JSONRPCMatch{Methods: nonEmpty(j.GetMethods())}
	}
	if mc := m.GetMcp(); mc != nil {
		r.MCP = &policy.MCPMatch{Tools: nonEmpty(mc.GetTools())}
	}
	if mf := m.GetFrom(); len(mf) > 0 {
		r.From = make([]policy.Peer, len(mf))
		for i, pm := range mf {
			if err := peerFromProto(pm, &r.From[i]); err != nil {
				return fmt.Errorf("from %d: %w", i, err)
			}
		}
	}
	if mp := m.GetPorts(); len(mp) > 0 {
		r.Ports = make([]policy.PortRange, len(mp))
		for i, pr := range mp {
			from, err := portFromProto(pr.GetFrom())
			if err != nil {
				return fmt.Errorf("ports %d: %w", i, err)
			}
			to, err := portFromProto(pr.GetTo())
			if err != nil {
				return fmt.Errorf("ports %d: %w", i, err)
			}
			r.Ports[i] = policy.PortRange{From: from, To: to}
		}
	}
	return nil
}

func peerFromProto(m *pb.Peer, p *policy.Peer) error {
	if is := m.GetIdentities(); is != nil {
		ids := make([]spiffe.ID, len(is.GetIds()))
		for i, id := range is.GetIds() {
			ids[i] = spiffe.ID{TrustDomain: id.GetTrustDomain(), Namespace: id.GetNamespace(), ServiceAccount: id.GetServiceAccount()}
		}
		p.Identities = policy.SetOf(ids...)
	}
	if s := m.GetNamespaces(); s != nil {
		p.Namespaces = policy.SetOf(s.GetValues()...)
	}
	if s := m.GetWorkloads(); s != nil {
		p.Workloads = policy.SetOf(s.GetValues()...)
	}
	if mb := m.GetIpBlocks(); len(mb) > 0 {
		p.IPBlocks = make([]policy.IPBlock, len(mb))
		for i, bm := range mb {
			b := &p.IPBlocks[i]
			var err error
			if b.Prefix, err = prefixFromProto(bm.GetPrefix()); err != nil {
				return fmt.Errorf("ip block %d: %w", i, err)
			}
			if ex := bm.GetExcept(); len(ex) > 0 {
				b.Except = make([]netip.Prefix, len(ex))
				for j, x := range ex {
					if b.Except[j], err = prefixFromProto(x); err != nil {
						return fmt.Errorf("ip block %d: except %d: %w", i, j, err)
					}
				}
			}
		}
	}
	return nil
}

// prefixFromProto decodes a prefix; an absent or empty one is the zero Prefix.
func prefixFromProto(m *pb.Prefix) (netip.Prefix, error) {
	addr, bits := m.GetAddr(), m.GetBits()
	if len(addr) == 0 {
		if bits != 0 {
			return netip.Prefix{}, invalid("prefix /%d has no address", bits)
		}
		return netip.Prefix{}, nil
	}
	a, err := addrFromBytes(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	if bits > uint32(a.BitLen()) {
		return netip.Prefix{}, invalid("prefix %s/%d: more bits than the address", a, bits)
	}
	return netip.PrefixFrom(a, int(bits)), nil
}

func actionFromProto(a pb.Action) (policy.Action, error) {
	switch a {
	case pb.Action_ACTION_UNSPECIFIED:
		return "", nil
	case pb.Action_ACTION_ALLOW:
		return policy.ActionAllow, nil
	case pb.Action_ACTION_DENY:
		return policy.ActionDeny, nil
	}
	return "", invalid("unknown action %d", a)
}

func mtlsModeFromProto(m pb.MtlsMode) (policy.MTLSMode, error) {
	switch m {
	case pb.MtlsMode_MTLS_MODE_UNSPECIFIED:
		return "", nil
	case pb.MtlsMode_MTLS_MODE_STRICT:
		return policy.MTLSStrict, nil
	case pb.MtlsMode_MTLS_MODE_PERMISSIVE:
		return policy.MTLSPermissive, nil
	}
	return "", invalid("unknown mtls mode %d", m)
}

func protocolFromProto(p pb.Protocol) (string, error) {
	switch p {
	case pb.Protocol_PROTOCOL_UNSPECIFIED:
		return "", nil
	case pb.Protocol_PROTOCOL_TCP:
		return "TCP", nil
	case pb.Protocol_PROTOCOL_UDP:
		return "UDP", nil
	case pb.Protocol_PROTOCOL_SCTP:
		return "SCTP", nil
	}
	return "", invalid("unknown protocol %d", p)
}

// nonEmpty is vs, or nil when it has none (as the JSON form decodes).
func nonEmpty(vs []string) []string {
	if len(vs) == 0 {
		return nil
	}
	return vs
}
