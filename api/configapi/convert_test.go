package configapi

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmesh/agentmesh/api/configapi/proto/agentmesh/v1"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// representative is a response with every field set somewhere: Authz
// inline and by reference, policies with every kind of peer, v4, v6 and
// v4-in-v6 addresses, labels, endpoints with named ports, an ExternalName
// service, routes (routes), a traffic policy with every part (traffic), an
// empty one and one whose parts are all present and empty.
func representative() *ConfigResponse {
	web := spiffe.New("cluster.local", "shop", "web")
	admin := spiffe.New("cluster.local", "ops", "admin")
	allowWeb := policy.Policy{Namespace: "shop", Name: "allow-web", Action: policy.ActionAllow, Rules: []policy.Rule{
		{Index: 0, From: []policy.Peer{{Identities: policy.SetOf(web, admin)}}, Ports: []policy.PortRange{{From: 8080, To: 8080}}},
		{Index: 1, From: []policy.Peer{
			{Namespaces: policy.SetOf("shop", "ops")},
			{Namespaces: policy.SetOf[string]()}, // a selector that picks no namespace
			{Workloads: policy.SetOf("uid-a", "uid-b")},
			{IPBlocks: []policy.IPBlock{
				{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.3.4/32")}},
				{Prefix: netip.MustParsePrefix("fd00::/8")},
				{Prefix: netip.MustParsePrefix("10.9.9.9/8")}, // not masked: kept as written
			}},
			{Identities: policy.SetOf(web), Namespaces: policy.SetOf("shop"), Workloads: policy.SetOf("uid-c"), IPBlocks: []policy.IPBlock{{Prefix: netip.MustParsePrefix("::ffff:10.0.0.0/104")}}},
		}, L7: true, HTTP: &policy.HTTPMatch{Methods: []string{"GET", "POST"}, Paths: []string{"/api/*"}}},
		{Index: 2, L7: true, JSONRPC: &policy.JSONRPCMatch{Methods: []string{"message/send"}}, MCP: &policy.MCPMatch{Tools: []string{"search", "fetch"}}},
		{Index: 3, L7: true, MCP: &policy.MCPMatch{}},
		{Index: 4},
	}}
	denySSH := policy.Policy{Namespace: "ops", Name: "deny-ssh", Action: policy.ActionDeny, Rules: []policy.Rule{{Index: 0, Ports: []policy.PortRange{{From: 22, To: 23}, {From: 0, To: 65535}}}}}
	return &ConfigResponse{
		Version:          42,
		Full:             true,
		More:             true,
		TrustDomain:      "cluster.local",
		TrustBundlePEM:   []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		RemovedWorkloads: []string{"gone-1", "gone-2"},
		RemovedServices:  []string{"shop/old"},
		Workloads: []meshconfig.Workload{
			{
				UID: "0b7f3c1e-8d2a-4f5b-9c6d-1e2f3a4b5c6d", Name: "web-7d9f-abcde", Namespace: "shop", ServiceAccount: "web", Node: "n1",
				IPs:      []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00:10:244:1::7")},
				Labels:   map[string]string{"app": "web", "version": "v2", "pod-template-hash": "7d9f"},
				Enrolled: true,
				Authz: &policy.Target{
					Policies:   []policy.Policy{denySSH},
					PolicyRefs: []string{"shop/allow-web"},
					MTLSMode:   policy.MTLSStrict,
					Default:    policy.ActionDeny,
					ProbePorts: []uint16{8080, 9090},
				},
			},
			{UID: "b", Name: "db", Namespace: "data", ServiceAccount: "db", Node: "n2", IPs: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.9")}, Netns: "/run/netns/db", WorkloadName: "db",
				Authz: &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}},
			{UID: "c", Name: "bare", Namespace: "x", ServiceAccount: "default", Node: "n2", Authz: &policy.Target{}},
			{UID: "d"},
		},
		Services: []meshconfig.Service{
			{
				Name: "web", Namespace: "shop",
				VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")},
				Ports: []meshconfig.ServicePort{
					{Name: "http", Port: 80, Protocol: "TCP", AppProtocol: "http"},
					{Name: "grpc", Port: 9090, TargetPort: 9091, Protocol: "TCP"},
					{Name: "dns", Port: 53, TargetPort: 53, Protocol: "UDP"},
					{Port: 3868, TargetPort: 3868, Protocol: "SCTP"},
					{Port: 1},
				},
				Endpoints: []meshconfig.Endpoint{
					{WorkloadUID: "0b7f3c1e-8d2a-4f5b-9c6d-1e2f3a4b5c6d", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.7")}, Ready: true, Ports: map[string]uint16{"http": 8080, "max": 65535}},
					{IPs: []netip.Addr{netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("2001:db8::1")}},
				},
				Routes:  routes(),
				Traffic: traffic(),
			},
			{Name: "ext", Namespace: "shop", ExternalName: "api.example.com", Traffic: &meshconfig.TrafficPolicy{}},
			{Name: "headless", Namespace: "shop", Endpoints: []meshconfig.Endpoint{{Ready: true}},
				Routes:  []meshconfig.Route{{Name: "shop/headless", Kind: "HTTPRoute", Backends: []meshconfig.Backend{{Service: "shop/web", Port: 80, Weight: 1}}}},
				Traffic: emptyParts()},
		},
		Policies: []policy.Policy{allowWeb, {Namespace: "empty", Name: "p"}},
	}
}

// routes are a Service's routes with every field set somewhere: several
// rules of an HTTPRoute and a GRPCRoute, every path match type, header and
// query matches exact and by regular expression, weighted backends (one of
// weight 0), timeouts, a retry policy, an empty one, and a route that
// matches every request and has no backend.
func routes() []meshconfig.Route {
	return []meshconfig.Route{
		{
			Name: "shop/web-canary", Kind: "HTTPRoute", Rule: 0, Port: 80,
			Match: meshconfig.RouteMatch{
				PathType: meshconfig.PathExact, Path: "/login", Method: "POST",
				Headers: []meshconfig.ValueMatch{{Name: "x-canary", Value: "true"}, {Name: "user-agent", Value: "^curl/[0-9.]+$", Regex: true}},
				Query:   []meshconfig.ValueMatch{{Name: "debug", Value: "1"}, {Name: "v", Value: "[0-9]+", Regex: true}},
			},
			Backends:       []meshconfig.Backend{{Service: "shop/web-v2", Port: 80, Weight: 90}, {Service: "shop/web-v1", Port: 8080, Weight: 10}},
			Timeout:        10 * time.Second,
			BackendTimeout: 2500 * time.Millisecond,
			Retry:          &meshconfig.Retry{Attempts: 3, Codes: []int{502, 503, 504}, Backoff: 25 * time.Millisecond},
		},
		{
			Name: "shop/web-canary", Kind: "HTTPRoute", Rule: 1,
			Match:    meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/api/"},
			Backends: []meshconfig.Backend{{Service: "shop/api", Port: 8080, Weight: 1}, {Service: "shop/api-drain", Port: 8080, Weight: 0}},
			Retry:    &meshconfig.Retry{},
		},
		{
			Name: "shop/cart", Kind: "GRPCRoute", Rule: 2, Port: 9090,
			Match:    meshconfig.RouteMatch{PathType: meshconfig.PathRegex, Path: `/shop\.v1\.Cart/(Add|Remove)Item`, Headers: []meshconfig.ValueMatch{{Name: "x-tenant", Value: "a|b", Regex: true}}},
			Backends: []meshconfig.Backend{{Service: "shop/cart", Port: 9090, Weight: 1}},
			Timeout:  time.Minute,
			Retry:    &meshconfig.Retry{Codes: []int{503}},
		},
		{Name: "shop/web-canary", Kind: "HTTPRoute", Rule: 2, Match: meshconfig.RouteMatch{Method: "GET", Query: []meshconfig.ValueMatch{{Name: "q", Value: ""}}}},
		{Name: "shop/catch-all", Kind: "HTTPRoute", Rule: 7},
	}
}

// traffic is a traffic policy with every part and field set (a valid
// one): consistent hash on a header, affinity on the A2A context, every
// timeout, a retry budget, every breaker limit, outlier ejection, and rate
// limits per endpoint, per source and per tool (one of them zero).
func traffic() *meshconfig.TrafficPolicy {
	return &meshconfig.TrafficPolicy{
		Name:         "shop/web-traffic",
		LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBConsistentHash, Hash: &meshconfig.HashKey{Header: "x-user"}},
		Affinity:     &meshconfig.Affinity{Key: meshconfig.HashKey{ContextID: true}},
		Timeouts:     &meshconfig.Timeouts{Connect: 2 * time.Second, FirstByte: 15 * time.Second, Idle: time.Minute, Total: 5*time.Minute + 1},
		RetryBudget:  &meshconfig.RetryBudget{Ratio: 0.2, MinPerSecond: 10},
		RetryBackoff: &meshconfig.RetryBackoff{Base: 50 * time.Millisecond, Max: time.Second},
		Breaker:      &meshconfig.Breaker{MaxConnections: 100, MaxPendingRequests: 50, MaxRequests: 1000, MaxRequestsPerEndpoint: 64},
		Outlier:      &meshconfig.Outlier{ConsecutiveFailures: 5, BaseEjection: 30 * time.Second, MaxEjection: 5 * time.Minute, MaxEjectedPercent: 50},
		RateLimit: &meshconfig.RateLimit{
			PerEndpoint: &meshconfig.Bucket{Rate: 100, Burst: 200},
			PerSource:   &meshconfig.Bucket{Rate: 2.5, Burst: 5},
			Tools:       map[string]meshconfig.Bucket{"search": {Rate: 1, Burst: 3}, "fetch": {Rate: 0.125, Burst: 1}, "free": {}},
		},
	}
}

// emptyParts is a traffic policy whose every part is present and zero
// (the wire keeps them apart from absent ones).
func emptyParts() *meshconfig.TrafficPolicy {
	return &meshconfig.TrafficPolicy{
		LoadBalancer: &meshconfig.LoadBalancer{Hash: &meshconfig.HashKey{}},
		Affinity:     &meshconfig.Affinity{},
		Timeouts:     &meshconfig.Timeouts{},
		RetryBudget:  &meshconfig.RetryBudget{},
		RetryBackoff: &meshconfig.RetryBackoff{},
		Breaker:      &meshconfig.Breaker{},
		Outlier:      &meshconfig.Outlier{},
		RateLimit:    &meshconfig.RateLimit{PerEndpoint: &meshconfig.Bucket{}, PerSource: &meshconfig.Bucket{}},
	}
}

// protoRoundTrip sends in through the proto codec.
func protoRoundTrip(t testing.TB, in any, out any) []byte {
	t.Helper()
	b, err := protoCodec{}.Marshal(in)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if err := (protoCodec{}).Unmarshal(b, out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return b
}

func TestRoundTripRepresentative(t *testing.T) {
	in := representative()
	var out ConfigResponse
	b := protoRoundTrip(t, in, &out)
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip differs (-in +out):\n%s", cmp.Diff(in, &out, cmpOpts...))
	}
	again, err := protoCodec{}.Marshal(&out)
	if err != nil || !bytes.Equal(b, again) {
		t.Errorf("the decoded message encodes to other bytes (%v)", err)
	}
}

// TestRoundTripRoutes: a Service's routes survive the codec in order,
// with nothing added or dropped, and the representative config with them
// is one Validate accepts.
func TestRoundTripRoutes(t *testing.T) {
	in := &ConfigResponse{Version: 1, Services: []meshconfig.Service{
		{Name: "web", Namespace: "shop", Routes: routes()},
		{Name: "plain", Namespace: "shop", Ports: []meshconfig.ServicePort{{Port: 80}}},
		{Name: "api", Namespace: "shop", Routes: routes()[1:3]},
	}}
	var out ConfigResponse
	protoRoundTrip(t, in, &out)
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip differs (-in +out):\n%s", cmp.Diff(in, &out, cmpOpts...))
	}
	if out.Services[1].Routes != nil {
		t.Errorf("a service without routes decoded with %#v", out.Services[1].Routes)
	}
	if got := out.Services[0].Routes[1].Retry; got == nil || !reflect.DeepEqual(*got, meshconfig.Retry{}) {
		t.Errorf("empty retry decoded as %#v, want a non-nil empty one", got)
	}
	if got := out.Services[0].Routes[4].Retry; got != nil {
		t.Errorf("absent retry decoded as %#v, want nil", got)
	}
	cfg := meshconfig.Config{Services: in.Services}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the test routes are not valid: %v", err)
	}
}

// TestRoundTripTraffic: a Service's traffic policy survives the codec with
// each part present exactly when it was (nil and empty stay apart), every
// algorithm apart from the others and from none, and the full test policy
// is one Validate accepts.
func TestRoundTripTraffic(t *testing.T) {
	in := &ConfigResponse{Version: 1, Services: []meshconfig.Service{
		{Name: "web", Namespace: "shop", Traffic: traffic()},
		{Name: "plain", Namespace: "shop", Ports: []meshconfig.ServicePort{{Port: 80}}},
		{Name: "empty", Namespace: "shop", Traffic: &meshconfig.TrafficPolicy{}},
		{Name: "parts", Namespace: "shop", Traffic: emptyParts()},
	}}
	// Each part alone, empty.
	full := traffic()
	for i, tp := range []*meshconfig.TrafficPolicy{
		{LoadBalancer: &meshconfig.LoadBalancer{}},
		{LoadBalancer: &meshconfig.LoadBalancer{Hash: &meshconfig.HashKey{}}},
		{Affinity: &meshconfig.Affinity{}},
		{Timeouts: &meshconfig.Timeouts{}},
		{RetryBudget: &meshconfig.RetryBudget{}},
		{RetryBackoff: &meshconfig.RetryBackoff{}},
		{Breaker: &meshconfig.Breaker{}},
		{Outlier: &meshconfig.Outlier{}},
		{RateLimit: &meshconfig.RateLimit{}},
		{RateLimit: &meshconfig.RateLimit{PerSource: &meshconfig.Bucket{}}},
		{RateLimit: &meshconfig.RateLimit{Tools: map[string]meshconfig.Bucket{"": {}}}},
		{Name: "only/name"},
		{RateLimit: full.RateLimit, Outlier: full.Outlier},
	} {
		in.Services = append(in.Services, meshconfig.Service{Name: fmt.Sprintf("part-%d", i), Namespace: "shop", Traffic: tp})
	}
	for _, a := range []string{"", meshconfig.LBPeakEWMA, meshconfig.LBRoundRobin, meshconfig.LBLeastRequest, meshconfig.LBConsistentHash} {
		in.Services = append(in.Services, meshconfig.Service{Name: "lb-" + a, Namespace: "shop",
			Traffic: &meshconfig.TrafficPolicy{LoadBalancer: &meshconfig.LoadBalancer{Algorithm: a}}})
	}
	var out ConfigResponse
	protoRoundTrip(t, in, &out)
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip differs (-in +out):\n%s", cmp.Diff(in, &out, cmpOpts...))
	}
	if out.Services[1].Traffic != nil {
		t.Errorf("a service without traffic decoded with %#v", out.Services[1].Traffic)
	}
	if got := out.Services[2].Traffic; got == nil || !reflect.DeepEqual(*got, meshconfig.TrafficPolicy{}) {
		t.Errorf("empty traffic policy decoded as %#v, want a non-nil empty one", got)
	}
	if got := out.Services[3].Traffic.RateLimit; got.PerEndpoint == nil || got.PerSource == nil || got.Tools != nil {
		t.Errorf("empty rate limit parts decoded as %#v", got)
	}
	cfg := meshconfig.Config{Services: []meshconfig.Service{in.Services[0]}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the test traffic policy is not valid: %v", err)
	}
}

// TestRoundTripRandom: random responses in canonical form survive
// Go -> proto -> bytes -> proto -> Go, and encode deterministically.
func TestRoundTripRandom(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		in := randResponse(r)
		var out ConfigResponse
		b := protoRoundTrip(t, in, &out)
		if !reflect.DeepEqual(in, &out) {
			t.Fatalf("seed %d: round trip differs (-in +out):\n%s", seed, cmp.Diff(in, &out, cmpOpts...))
		}
		again, err := protoCodec{}.Marshal(in)
		if err != nil || !bytes.Equal(b, again) {
			t.Fatalf("seed %d: two encodings differ (%v)", seed, err)
		}
	}
}

// TestRoundTripSmallMessages: the other three message types.
func TestRoundTripSmallMessages(t *testing.T) {
	for _, tc := range []struct{ in, out any }{
		{&ConfigRequest{Node: "n1", Component: ComponentZtunnel, AckVersion: 1 << 60, Error: "bad"}, new(ConfigRequest)},
		{&ConfigRequest{}, new(ConfigRequest)},
		{&SignRequest{CSRPEM: []byte("csr")}, new(SignRequest)},
		{&SignRequest{}, new(SignRequest)},
		{&SignResponse{ChainPEM: []byte("leaf\nca")}, new(SignResponse)},
		{&ConfigResponse{}, new(ConfigResponse)},
	} {
		protoRoundTrip(t, tc.in, tc.out)
		if !reflect.DeepEqual(tc.in, tc.out) {
			t.Errorf("%T: round trip %+v -> %+v", tc.in, tc.in, tc.out)
		}
	}
}

// TestEmptyEncodesAsNil: empty slices and maps encode like nil ones and
// decode as nil (the canonical form).
func TestEmptyEncodesAsNil(t *testing.T) {
	empty := &ConfigResponse{
		TrustBundlePEM: []byte{}, RemovedWorkloads: []string{}, RemovedServices: []string{}, Policies: []policy.Policy{},
		Workloads: []meshconfig.Workload{{UID: "a", IPs: []netip.Addr{}, Labels: map[string]string{},
			Authz: &policy.Target{Policies: []policy.Policy{{Rules: []policy.Rule{{From: []policy.Peer{{IPBlocks: []policy.IPBlock{}}}, Ports: []policy.PortRange{}}}}}, PolicyRefs: []string{}, ProbePorts: []uint16{}}}},
		Services: []meshconfig.Service{
			{Name: "s", VIPs: []netip.Addr{}, Ports: []meshconfig.ServicePort{}, Endpoints: []meshconfig.Endpoint{{IPs: []netip.Addr{}, Ports: map[string]uint16{}}}, Routes: []meshconfig.Route{}},
			{Name: "r", Routes: []meshconfig.Route{{
				Match:    meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{}, Query: []meshconfig.ValueMatch{}},
				Backends: []meshconfig.Backend{},
				Retry:    &meshconfig.Retry{Codes: []int{}},
			}}},
			{Name: "t", Traffic: &meshconfig.TrafficPolicy{RateLimit: &meshconfig.RateLimit{Tools: map[string]meshconfig.Bucket{}}}},
		},
	}
	canonical := &ConfigResponse{
		Workloads: []meshconfig.Workload{{UID: "a", Authz: &policy.Target{Policies: []policy.Policy{{Rules: []policy.Rule{{From: []policy.Peer{{}}}}}}}}},
		Services: []meshconfig.Service{{Name: "s", Endpoints: []meshconfig.Endpoint{{}}}, {Name: "r", Routes: []meshconfig.Route{{Retry: &meshconfig.Retry{}}}},
			{Name: "t", Traffic: &meshconfig.TrafficPolicy{RateLimit: &meshconfig.RateLimit{}}}},
	}
	b1, err1 := protoCodec{}.Marshal(empty)
	b2, err2 := protoCodec{}.Marshal(canonical)
	if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("empty and nil encode differently (%v, %v)", err1, err2)
	}
	var out ConfigResponse
	if err := (protoCodec{}).Unmarshal(b1, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(canonical, &out) {
		t.Fatalf("decoded (-want +got):\n%s", cmp.Diff(canonical, &out, cmpOpts...))
	}
}

// TestInvalidWire: bytes that break the schema are errors (ErrInvalid),
// never a panic or a silently truncated value.
func TestInvalidWire(t *testing.T) {
	wl := func(mod func(*pb.Workload)) *pb.ConfigResponse {
		w := &pb.Workload{Uid: "u", Ips: [][]byte{{10, 0, 0, 1}}, Authz: &pb.Target{}}
		mod(w)
		return &pb.ConfigResponse{Workloads: []*pb.Workload{w}}
	}
	svc := func(mod func(*pb.Service)) *pb.ConfigResponse {
		s := &pb.Service{Name: "s", Ports: []*pb.ServicePort{{Port: 80}}, Endpoints: []*pb.Endpoint{{Ips: [][]byte{{10, 0, 0, 2}}}}}
		mod(s)
		return &pb.ConfigResponse{Services: []*pb.Service{s}}
	}
	route := func(mod func(*pb.Route)) *pb.ConfigResponse {
		rt := &pb.Route{Name: "shop/r", Port: 80, Match: &pb.RouteMatch{PathType: pb.PathMatchType_PATH_MATCH_TYPE_PATH_PREFIX, Path: "/"},
			Backends: []*pb.Backend{{Service: "shop/b", Port: 8080, Weight: 1}}, TimeoutNs: 1e9, Retry: &pb.Retry{Attempts: 2, Codes: []uint32{503}, BackoffNs: 1e6}}
		mod(rt)
		return svc(func(s *pb.Service) { s.Routes = []*pb.Route{{Name: "shop/ok"}, rt} })
	}
	peer := func(p *pb.Peer) *pb.ConfigResponse {
		return &pb.ConfigResponse{Policies: []*pb.Policy{{Name: "p", Rules: []*pb.Rule{{From: []*pb.Peer{p}}}}}}
	}
	// a service with the full test traffic policy, modified
	traffic := func(mod func(*pb.TrafficPolicy)) *pb.ConfigResponse {
		tp, err := trafficToProto(traffic())
		if err != nil {
			t.Fatal(err)
		}
		mod(tp)
		return svc(func(s *pb.Service) { s.Traffic = tp })
	}
	nan, inf := math.NaN(), math.Inf(1)
	for name, m := range map[string]*pb.ConfigResponse{
		"address of 5 bytes":         wl(func(w *pb.Workload) { w.Ips = [][]byte{{1, 2, 3, 4, 5}} }),
		"address of 15 bytes":        svc(func(s *pb.Service) { s.Vips = [][]byte{make([]byte, 15)} }),
		"endpoint address":           svc(func(s *pb.Service) { s.Endpoints[0].Ips = [][]byte{{1}} }),
		"port 65536":                 svc(func(s *pb.Service) { s.Ports[0].Port = 65536 }),
		"target port 1<<32-1":        svc(func(s *pb.Service) { s.Ports[0].TargetPort = 1<<32 - 1 }),
		"named port 70000":           svc(func(s *pb.Service) { s.Endpoints[0].Ports = []*pb.NamedPort{{Name: "http", Port: 70000}} }),
		"protocol 9":                 svc(func(s *pb.Service) { s.Ports[0].Protocol = 9 }),
		"probe port 65536":           wl(func(w *pb.Workload) { w.Authz.ProbePorts = []uint32{80, 65536} }),
		"mtls mode 3":                wl(func(w *pb.Workload) { w.Authz.MtlsMode = 3 }),
		"default action -1":          wl(func(w *pb.Workload) { w.Authz.DefaultAction = -1 }),
		"inline policy action 7":     wl(func(w *pb.Workload) { w.Authz.Policies = []*pb.Policy{{Action: 7}} }),
		"policy action 3":            {Policies: []*pb.Policy{{Action: 3}}},
		"port range to 65536":        {Policies: []*pb.Policy{{Rules: []*pb.Rule{{Ports: []*pb.PortRange{{From: 1, To: 65536}}}}}}},
		"port range from 1<<20":      {Policies: []*pb.Policy{{Rules: []*pb.Rule{{Ports: []*pb.PortRange{{From: 1 << 20}}}}}}},
		"prefix of 3 bytes":          peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Prefix: &pb.Prefix{Addr: []byte{10, 0, 0}, Bits: 8}}}}),
		"prefix /33":                 peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Prefix: &pb.Prefix{Addr: []byte{10, 0, 0, 0}, Bits: 33}}}}),
		"prefix /129":                peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Prefix: &pb.Prefix{Addr: make([]byte, 16), Bits: 129}}}}),
		"prefix bits, no address":    peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Prefix: &pb.Prefix{Bits: 8}}}}),
		"except of 17 bytes":         peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Except: []*pb.Prefix{{Addr: make([]byte, 17)}}}}}),
		"route port 70000":           route(func(r *pb.Route) { r.Port = 70000 }),
		"backend port 65536":         route(func(r *pb.Route) { r.Backends[0].Port = 65536 }),
		"route timeout -1ns":         route(func(r *pb.Route) { r.TimeoutNs = -1 }),
		"backend timeout -1s":        route(func(r *pb.Route) { r.BackendTimeoutNs = -1e9 }),
		"retry backoff -1ns":         route(func(r *pb.Route) { r.Retry.BackoffNs = -1 }),
		"retry code 1000":            route(func(r *pb.Route) { r.Retry.Codes = []uint32{503, 1000} }),
		"retry code 70000":           route(func(r *pb.Route) { r.Retry.Codes = []uint32{70000} }),
		"path match type 4":          route(func(r *pb.Route) { r.Match.PathType = 4 }),
		"path match type -1":         route(func(r *pb.Route) { r.Match.PathType = -1 }),
		"path match type 9 only":     route(func(r *pb.Route) { r.Match = &pb.RouteMatch{PathType: 9} }),
		"connect timeout -1ns":       traffic(func(tp *pb.TrafficPolicy) { tp.Timeouts.ConnectNs = -1 }),
		"first byte timeout -1s":     traffic(func(tp *pb.TrafficPolicy) { tp.Timeouts.FirstByteNs = -1e9 }),
		"idle timeout -1ns":          traffic(func(tp *pb.TrafficPolicy) { tp.Timeouts.IdleNs = -1 }),
		"total timeout min int64":    traffic(func(tp *pb.TrafficPolicy) { tp.Timeouts.TotalNs = math.MinInt64 }),
		"base ejection -1ns":         traffic(func(tp *pb.TrafficPolicy) { tp.Outlier.BaseEjectionNs = -1 }),
		"max ejection -1ns":          traffic(func(tp *pb.TrafficPolicy) { tp.Outlier.MaxEjectionNs = -1 }),
		"traffic retry backoff -1ns": traffic(func(tp *pb.TrafficPolicy) { tp.RetryBackoff.BaseNs = -1 }),
		"lb algorithm 5":             traffic(func(tp *pb.TrafficPolicy) { tp.LoadBalancer.Algorithm = 5 }),
		"lb algorithm -1":            traffic(func(tp *pb.TrafficPolicy) { tp.LoadBalancer.Algorithm = -1 }),
		"lb algorithm 9 only":        traffic(func(tp *pb.TrafficPolicy) { tp.LoadBalancer = &pb.LoadBalancer{Algorithm: 9} }),
		"retry ratio NaN":            traffic(func(tp *pb.TrafficPolicy) { tp.RetryBudget.Ratio = nan }),
		"retry ratio +Inf":           traffic(func(tp *pb.TrafficPolicy) { tp.RetryBudget.Ratio = inf }),
		"retry ratio -0.5":           traffic(func(tp *pb.TrafficPolicy) { tp.RetryBudget.Ratio = -0.5 }),
		"per endpoint rate NaN":      traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.PerEndpoint.Rate = nan }),
		"per source rate -1":         traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.PerSource.Rate = -1 }),
		"per source rate -Inf":       traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.PerSource.Rate = -inf }),
		"tool rate +Inf":             traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.Tools["search"].Rate = inf }),
		"tool rate NaN":              traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.Tools["free"] = &pb.Bucket{Rate: nan} }),
		"nested policy bad prefix": wl(func(w *pb.Workload) {
			w.Authz.Policies = []*pb.Policy{peer(&pb.Peer{IpBlocks: []*pb.IPBlock{{Prefix: &pb.Prefix{Addr: []byte{1}}}}}).Policies[0]}
		}),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var out ConfigResponse
		err = protoCodec{}.Unmarshal(b, &out)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Unmarshal error = %v, want ErrInvalid", name, err)
		}
		if _, err := decodeResponseGenerated(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: generated path error = %v, want ErrInvalid", name, err)
		}
	}
	// What the cases above break, unbroken, decodes.
	for name, m := range map[string]*pb.ConfigResponse{
		"workload": wl(func(*pb.Workload) {}), "service": svc(func(*pb.Service) {}), "route": route(func(*pb.Route) {}),
		"traffic": traffic(func(*pb.TrafficPolicy) {}), "rate -0": traffic(func(tp *pb.TrafficPolicy) { tp.RateLimit.PerSource.Rate = math.Copysign(0, -1) }),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := (protoCodec{}).Unmarshal(b, new(ConfigResponse)); err != nil {
			t.Errorf("valid %s: %v", name, err)
		}
	}
	var out ConfigResponse
	if err := (protoCodec{}).Unmarshal([]byte{0x0a, 0xff}, &out); err == nil {
		t.Error("truncated bytes accepted")
	}
}

// TestInvalidGo: what the wire cannot carry is an error, not a silent
// loss.
func TestInvalidGo(t *testing.T) {
	for name, r := range map[string]*ConfigResponse{
		"zoned address":   {Workloads: []meshconfig.Workload{{IPs: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}}}},
		"unknown action":  {Policies: []policy.Policy{{Action: "allow"}}},
		"unknown default": {Workloads: []meshconfig.Workload{{Authz: &policy.Target{Default: "Maybe"}}}},
		"unknown mode":    {Workloads: []meshconfig.Workload{{Authz: &policy.Target{MTLSMode: "strict"}}}},
		"unknown proto":   {Services: []meshconfig.Service{{Ports: []meshconfig.ServicePort{{Port: 80, Protocol: "QUIC"}}}}},
		"invalid prefix":  {Policies: []policy.Policy{{Rules: []policy.Rule{{From: []policy.Peer{{IPBlocks: []policy.IPBlock{{Prefix: netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 40)}}}}}}}}},
		"path match type": routeResponse(meshconfig.Route{Match: meshconfig.RouteMatch{PathType: "Prefix", Path: "/"}}),
		"timeout":         routeResponse(meshconfig.Route{Timeout: -time.Second}),
		"backend timeout": routeResponse(meshconfig.Route{BackendTimeout: -1}),
		"retry backoff":   routeResponse(meshconfig.Route{Retry: &meshconfig.Retry{Backoff: -time.Millisecond}}),
		"retry attempts":  routeResponse(meshconfig.Route{Retry: &meshconfig.Retry{Attempts: -1}}),
		"retry code 1000": routeResponse(meshconfig.Route{Retry: &meshconfig.Retry{Codes: []int{503, 1000}}}),
		"retry code -1":   routeResponse(meshconfig.Route{Retry: &meshconfig.Retry{Codes: []int{-1}}}),

		"lb algorithm":        trafficResponse(meshconfig.TrafficPolicy{LoadBalancer: &meshconfig.LoadBalancer{Algorithm: "peakEWMA"}}),
		"connect timeout":     trafficResponse(meshconfig.TrafficPolicy{Timeouts: &meshconfig.Timeouts{Connect: -1}}),
		"total timeout":       trafficResponse(meshconfig.TrafficPolicy{Timeouts: &meshconfig.Timeouts{Total: -time.Hour}}),
		"base ejection":       trafficResponse(meshconfig.TrafficPolicy{Outlier: &meshconfig.Outlier{ConsecutiveFailures: 1, BaseEjection: -time.Second}}),
		"retry ratio NaN":     trafficResponse(meshconfig.TrafficPolicy{RetryBudget: &meshconfig.RetryBudget{Ratio: math.NaN()}}),
		"retry ratio -0.1":    trafficResponse(meshconfig.TrafficPolicy{RetryBudget: &meshconfig.RetryBudget{Ratio: -0.1}}),
		"min per second -1":   trafficResponse(meshconfig.TrafficPolicy{RetryBudget: &meshconfig.RetryBudget{MinPerSecond: -1}}),
		"max connections -1":  trafficResponse(meshconfig.TrafficPolicy{Breaker: &meshconfig.Breaker{MaxConnections: -1}}),
		"ejected percent -1":  trafficResponse(meshconfig.TrafficPolicy{Outlier: &meshconfig.Outlier{MaxEjectedPercent: -1}}),
		"per endpoint rate":   trafficResponse(meshconfig.TrafficPolicy{RateLimit: &meshconfig.RateLimit{PerEndpoint: &meshconfig.Bucket{Rate: math.Inf(1)}}}),
		"per source burst -1": trafficResponse(meshconfig.TrafficPolicy{RateLimit: &meshconfig.RateLimit{PerSource: &meshconfig.Bucket{Burst: -1}}}),
		"tool rate NaN":       trafficResponse(meshconfig.TrafficPolicy{RateLimit: &meshconfig.RateLimit{Tools: map[string]meshconfig.Bucket{"t": {Rate: math.NaN()}}}}),
	} {
		if _, err := (protoCodec{}).Marshal(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Marshal error = %v, want ErrInvalid", name, err)
		}
	}
	if big := math.MaxInt; uint64(big) > math.MaxUint32 { // a 64-bit int: above the wire's uint32
		r := trafficResponse(meshconfig.TrafficPolicy{Breaker: &meshconfig.Breaker{MaxRequests: big}})
		if _, err := (protoCodec{}).Marshal(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("max requests %d: Marshal error = %v, want ErrInvalid", big, err)
		}
	}
}

// trafficResponse is a response with one service with traffic policy tp.
func trafficResponse(tp meshconfig.TrafficPolicy) *ConfigResponse {
	return &ConfigResponse{Services: []meshconfig.Service{{Name: "s", Namespace: "ns", Traffic: &tp}}}
}

// routeResponse is a response with one service with route rt.
func routeResponse(rt meshconfig.Route) *ConfigResponse {
	return &ConfigResponse{Services: []meshconfig.Service{{Name: "s", Namespace: "ns", Routes: []meshconfig.Route{rt}}}}
}

// TestWrongType: the codec refuses values it has no message for, and the
// bytes of one message type where another is expected.
func TestWrongType(t *testing.T) {
	c := protoCodec{}
	if _, err := c.Marshal(&struct{ A int }{1}); err == nil {
		t.Error("marshal of a foreign type accepted")
	}
	if _, err := c.Marshal(ConfigRequest{}); err == nil {
		t.Error("marshal of a message by value accepted")
	}
	req, _ := c.Marshal(&ConfigRequest{Node: "n1", Component: ComponentAgentd, AckVersion: 3})
	if err := c.Unmarshal(req, new(int)); err == nil {
		t.Error("unmarshal into *int accepted")
	}
	if err := c.Unmarshal(req, new(ConfigResponse)); !errors.Is(err, ErrInvalid) {
		t.Errorf("a ConfigRequest decoded as a ConfigResponse: %v, want ErrInvalid", err)
	}
	resp, _ := c.Marshal(&ConfigResponse{Version: 3, TrustDomain: "td"})
	if err := c.Unmarshal(resp, new(ConfigRequest)); !errors.Is(err, ErrInvalid) {
		t.Errorf("a ConfigResponse decoded as a ConfigRequest: %v, want ErrInvalid", err)
	}
	// Fields this schema does not know are skipped: a newer peer may send them.
	future := protoAppendField(resp, 99, "from a newer controller")
	var out ConfigResponse
	if err := c.Unmarshal(future, &out); err != nil || out.Version != 3 || out.TrustDomain != "td" {
		t.Errorf("unknown field: %+v, %v", out, err)
	}
}

func protoAppendField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(slices.Clone(b), num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b policy.Set[string]) bool { return reflect.DeepEqual(a, b) }),
	cmp.Comparer(func(a, b policy.Set[spiffe.ID]) bool { return reflect.DeepEqual(a, b) }),
}

// randResponse is a random response in canonical form (nil for empty).
func randResponse(r *rand.Rand) *ConfigResponse {
	g := gen{r}
	resp := &ConfigResponse{
		Version:          r.Uint64(),
		Full:             r.IntN(2) == 0,
		More:             r.IntN(2) == 0,
		TrustDomain:      g.str(),
		TrustBundlePEM:   g.bytes(),
		RemovedWorkloads: g.strs(3),
		RemovedServices:  g.strs(3),
	}
	for range r.IntN(6) {
		w := meshconfig.Workload{
			UID: g.str(), Name: g.str(), Namespace: g.str(), ServiceAccount: g.str(), Node: g.str(),
			IPs: g.addrs(3), Labels: g.labels(), Enrolled: r.IntN(2) == 0, Netns: g.str(), WorkloadName: g.str(),
		}
		if r.IntN(3) == 0 {
			w.Authz = g.target()
		}
		resp.Workloads = append(resp.Workloads, w)
	}
	for range r.IntN(4) {
		s := meshconfig.Service{Name: g.str(), Namespace: g.str()}
		if r.IntN(4) == 0 {
			s.ExternalName = g.str()
		} else {
			s.VIPs = g.addrs(2)
			for range r.IntN(3) {
				s.Ports = append(s.Ports, meshconfig.ServicePort{Name: g.str(), Port: g.port(), TargetPort: g.port(),
					Protocol: []string{"", "TCP", "UDP", "SCTP"}[r.IntN(4)], AppProtocol: g.str()})
			}
			for range r.IntN(4) {
				ep := meshconfig.Endpoint{WorkloadUID: g.str(), IPs: g.addrs(2), Ready: r.IntN(2) == 0}
				for range r.IntN(3) {
					if ep.Ports == nil {
						ep.Ports = map[string]uint16{}
					}
					ep.Ports[g.str()] = g.port()
				}
				s.Endpoints = append(s.Endpoints, ep)
			}
			for range r.IntN(4) {
				s.Routes = append(s.Routes, g.route())
			}
		}
		if r.IntN(3) == 0 {
			s.Traffic = g.traffic()
		}
		resp.Services = append(resp.Services, s)
	}
	resp.Policies = g.policies()
	return resp
}

type gen struct{ r *rand.Rand }

func (g gen) str() string {
	if g.r.IntN(5) == 0 {
		return ""
	}
	return fmt.Sprintf("s%d", g.r.IntN(1000))
}

func (g gen) strs(n int) []string {
	var out []string
	for range g.r.IntN(n + 1) {
		out = append(out, g.str())
	}
	return out
}

func (g gen) bytes() []byte {
	if g.r.IntN(2) == 0 {
		return nil
	}
	b := make([]byte, 1+g.r.IntN(40))
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	return b
}

func (g gen) port() uint16 {
	if g.r.IntN(4) == 0 {
		return 0
	}
	return uint16(g.r.IntN(65536))
}

func (g gen) addr() netip.Addr {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	switch g.r.IntN(4) {
	case 0:
		return netip.AddrFrom4([4]byte(b[:4]))
	case 1:
		return netip.AddrFrom16(b)
	case 2:
		return netip.AddrFrom16(netip.AddrFrom4([4]byte(b[:4])).As16()) // v4-in-v6
	}
	return netip.AddrFrom4([4]byte{10, 244, b[0], b[1]})
}

func (g gen) addrs(n int) []netip.Addr {
	var out []netip.Addr
	for range g.r.IntN(n + 1) {
		out = append(out, g.addr())
	}
	return out
}

func (g gen) labels() map[string]string {
	var m map[string]string
	for range g.r.IntN(4) {
		if m == nil {
			m = map[string]string{}
		}
		m[g.str()] = g.str()
	}
	return m
}

// route is a random route: not always one Validate accepts (the wire does
// not check regular expressions, backends' names or status codes below
// 400), but always one the wire carries.
func (g gen) route() meshconfig.Route {
	r := g.r
	rt := meshconfig.Route{Name: g.str(), Kind: []string{"", "HTTPRoute", "GRPCRoute"}[r.IntN(3)], Rule: r.IntN(5), Port: g.port()}
	if r.IntN(6) == 0 {
		rt.Rule = -r.IntN(1 << 40) // out of spec but representable
	}
	if r.IntN(4) > 0 {
		m := &rt.Match
		m.PathType = []string{"", meshconfig.PathExact, meshconfig.PathPrefix, meshconfig.PathRegex}[r.IntN(4)]
		m.Path = g.str()
		m.Method = g.str()
		m.Headers = g.valueMatches()
		m.Query = g.valueMatches()
	}
	for range r.IntN(4) {
		rt.Backends = append(rt.Backends, meshconfig.Backend{Service: g.str(), Port: g.port(), Weight: []uint32{0, 1, uint32(r.IntN(1000)), r.Uint32()}[r.IntN(4)]})
	}
	rt.Timeout, rt.BackendTimeout = g.duration(), g.duration()
	if r.IntN(2) == 0 {
		rt.Retry = &meshconfig.Retry{Attempts: []int{0, r.IntN(10), int(r.Uint32())}[r.IntN(3)], Backoff: g.duration()}
		for range r.IntN(4) {
			rt.Retry.Codes = append(rt.Retry.Codes, r.IntN(maxStatusCode+1))
		}
	}
	return rt
}

// traffic is a random traffic policy, each part present or not: not
// always one Validate accepts (the wire does not check that a hash key
// has one part, or outlier's bounds), but always one the wire carries.
func (g gen) traffic() *meshconfig.TrafficPolicy {
	r := g.r
	maybe := func() bool { return r.IntN(2) == 0 }
	tp := &meshconfig.TrafficPolicy{Name: g.str()}
	if maybe() {
		tp.LoadBalancer = &meshconfig.LoadBalancer{Algorithm: []string{"", meshconfig.LBPeakEWMA, meshconfig.LBRoundRobin, meshconfig.LBLeastRequest, meshconfig.LBConsistentHash}[r.IntN(5)]}
		if maybe() {
			k := g.hashKey()
			tp.LoadBalancer.Hash = &k
		}
	}
	if maybe() {
		tp.Affinity = &meshconfig.Affinity{Key: g.hashKey()}
	}
	if maybe() {
		tp.Timeouts = &meshconfig.Timeouts{Connect: g.duration(), FirstByte: g.duration(), Idle: g.duration(), Total: g.duration()}
	}
	if maybe() {
		tp.RetryBudget = &meshconfig.RetryBudget{Ratio: g.rate(), MinPerSecond: g.count()}
	}
	if maybe() {
		tp.Breaker = &meshconfig.Breaker{MaxConnections: g.count(), MaxPendingRequests: g.count(), MaxRequests: g.count(), MaxRequestsPerEndpoint: g.count()}
	}
	if maybe() {
		tp.Outlier = &meshconfig.Outlier{ConsecutiveFailures: g.count(), BaseEjection: g.duration(), MaxEjection: g.duration(), MaxEjectedPercent: g.count()}
	}
	if maybe() {
		rl := &meshconfig.RateLimit{}
		if maybe() {
			rl.PerEndpoint = &meshconfig.Bucket{Rate: g.rate(), Burst: g.count()}
		}
		if maybe() {
			rl.PerSource = &meshconfig.Bucket{Rate: g.rate(), Burst: g.count()}
		}
		for range r.IntN(4) {
			if rl.Tools == nil {
				rl.Tools = map[string]meshconfig.Bucket{}
			}
			rl.Tools[g.str()] = meshconfig.Bucket{Rate: g.rate(), Burst: g.count()}
		}
		tp.RateLimit = rl
	}
	return tp
}

func (g gen) hashKey() meshconfig.HashKey {
	var k meshconfig.HashKey
	switch g.r.IntN(5) {
	case 0:
		k.Header = g.str()
	case 1:
		k.Cookie = g.str()
	case 2:
		k.ContextID = true
	case 3:
		k = meshconfig.HashKey{Header: g.str(), Cookie: g.str(), ContextID: g.r.IntN(2) == 0}
	}
	return k
}

// rate is 0, small, fractional or as large as a float64 goes.
func (g gen) rate() float64 {
	return []float64{0, 1, g.r.Float64(), g.r.Float64() * 1e6, math.MaxFloat64, math.SmallestNonzeroFloat64}[g.r.IntN(6)]
}

// count is 0, small, or up to the largest the wire's uint32 carries.
func (g gen) count() int {
	return []int{0, 1, g.r.IntN(1000), int(g.r.Uint32())}[g.r.IntN(4)]
}

func (g gen) valueMatches() []meshconfig.ValueMatch {
	var out []meshconfig.ValueMatch
	for range g.r.IntN(3) {
		out = append(out, meshconfig.ValueMatch{Name: g.str(), Value: g.str(), Regex: g.r.IntN(2) == 0})
	}
	return out
}

// duration is 0, short, or anything up to the largest time.Duration.
func (g gen) duration() time.Duration {
	switch g.r.IntN(3) {
	case 0:
		return 0
	case 1:
		return time.Duration(g.r.IntN(int(time.Minute)))
	}
	return time.Duration(g.r.Int64())
}

func (g gen) action() policy.Action {
	return []policy.Action{"", policy.ActionAllow, policy.ActionDeny}[g.r.IntN(3)]
}

func (g gen) target() *policy.Target {
	t := &policy.Target{
		Policies:   g.policies(),
		PolicyRefs: g.strs(2),
		MTLSMode:   []policy.MTLSMode{"", policy.MTLSStrict, policy.MTLSPermissive}[g.r.IntN(3)],
		Default:    g.action(),
	}
	for range g.r.IntN(3) {
		t.ProbePorts = append(t.ProbePorts, g.port())
	}
	return t
}

func (g gen) policies() []policy.Policy {
	var out []policy.Policy
	for range g.r.IntN(3) {
		p := policy.Policy{Namespace: g.str(), Name: g.str(), Action: g.action()}
		for i := range g.r.IntN(4) {
			rule := policy.Rule{Index: i, L7: g.r.IntN(3) == 0}
			if rule.L7 {
				strs := func() []string {
					var out []string
					for range g.r.IntN(3) {
						out = append(out, g.str())
					}
					return out
				}
				if g.r.IntN(2) == 0 {
					rule.HTTP = &policy.HTTPMatch{Methods: strs(), Paths: strs()}
				}
				if g.r.IntN(2) == 0 {
					rule.JSONRPC = &policy.JSONRPCMatch{Methods: strs()}
				}
				if g.r.IntN(2) == 0 {
					rule.MCP = &policy.MCPMatch{Tools: strs()}
				}
			}
			if g.r.IntN(5) == 0 {
				rule.Index = -g.r.IntN(1 << 40) // out of spec but representable
			}
			for range g.r.IntN(4) {
				rule.From = append(rule.From, g.peer())
			}
			for range g.r.IntN(3) {
				rule.Ports = append(rule.Ports, policy.PortRange{From: g.port(), To: g.port()})
			}
			p.Rules = append(p.Rules, rule)
		}
		out = append(out, p)
	}
	return out
}

func (g gen) set() (policy.Set[string], bool) {
	if g.r.IntN(3) == 0 {
		return policy.Set[string]{}, false
	}
	return policy.SetOf(g.strs(3)...), true
}

func (g gen) peer() policy.Peer {
	var p policy.Peer
	if g.r.IntN(3) > 0 {
		var ids []spiffe.ID
		for range g.r.IntN(3) {
			ids = append(ids, spiffe.New(g.str(), g.str(), g.str()))
		}
		p.Identities = policy.SetOf(ids...)
	}
	p.Namespaces, _ = g.set()
	p.Workloads, _ = g.set()
	for range g.r.IntN(3) {
		b := policy.IPBlock{}
		if g.r.IntN(6) > 0 {
			a := g.addr()
			b.Prefix = netip.PrefixFrom(a, g.r.IntN(a.BitLen()+1))
		}
		for range g.r.IntN(3) {
			a := g.addr()
			b.Except = append(b.Except, netip.PrefixFrom(a, g.r.IntN(a.BitLen()+1)))
		}
		p.IPBlocks = append(p.IPBlocks, b)
	}
	return p
}
