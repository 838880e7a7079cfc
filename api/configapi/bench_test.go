package configapi

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/grpc/encoding"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// benchView is a full view of a large cluster: 10 000 workloads (labels
// app, version and pod-template-hash, an IPv4 address and for a quarter
// an IPv6 one too, UUIDs), 100 of them with Authz referring to policies,
// 20 policies, and 500 services of 20 endpoints each.
func benchView() *ConfigResponse {
	r := rand.New(rand.NewPCG(1, 2))
	uuid := func() string {
		return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.IntN(1<<16), r.IntN(1<<12), 0x8000|r.IntN(1<<14), r.Uint64()&(1<<48-1))
	}
	resp := &ConfigResponse{Version: 7, Full: true, TrustDomain: "cluster.local", TrustBundlePEM: make([]byte, 1200)}
	const nPolicies = 20
	for i := range nPolicies {
		ns := fmt.Sprintf("team-%d", i%10)
		resp.Policies = append(resp.Policies, policy.Policy{Namespace: ns, Name: fmt.Sprintf("allow-%d", i), Action: policy.ActionAllow, Rules: []policy.Rule{
			{Index: 0, From: []policy.Peer{
				{Identities: policy.SetOf(spiffe.New("cluster.local", ns, "frontend"), spiffe.New("cluster.local", "ops", "prober"))},
				{Namespaces: policy.SetOf("monitoring")},
			}, Ports: []policy.PortRange{{From: 8080, To: 8080}}},
			{Index: 1, From: []policy.Peer{{IPBlocks: []policy.IPBlock{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}}}}}},
		}})
	}
	const nWorkloads, nApps = 10_000, 500
	resp.Workloads = make([]meshconfig.Workload, nWorkloads)
	for i := range resp.Workloads {
		app := i % nApps
		ns := fmt.Sprintf("team-%d", app%10)
		hash := fmt.Sprintf("%x", 0x5d8f9c7b4+app)
		w := meshconfig.Workload{
			UID: uuid(), Name: fmt.Sprintf("app-%d-%s-%05x", app, hash, i), Namespace: ns, ServiceAccount: fmt.Sprintf("app-%d", app),
			Node:     fmt.Sprintf("node-%d", i%100),
			IPs:      []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
			Labels:   map[string]string{"app": fmt.Sprintf("app-%d", app), "version": fmt.Sprintf("v%d", i%3+1), "pod-template-hash": hash},
			Enrolled: true,
		}
		if i%4 == 0 {
			w.IPs = append(w.IPs, netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x2, 0x44, 14: byte(i >> 8), 15: byte(i)}))
		}
		if i%100 == 0 {
			w.Authz = &policy.Target{
				PolicyRefs: []string{resp.Policies[app%nPolicies].Key(), resp.Policies[(app+1)%nPolicies].Key()},
				MTLSMode:   policy.MTLSStrict, Default: policy.ActionDeny, ProbePorts: []uint16{8080, 9090},
			}
		}
		resp.Workloads[i] = w
	}
	resp.Services = make([]meshconfig.Service, nApps)
	for app := range resp.Services {
		s := meshconfig.Service{
			Name: fmt.Sprintf("app-%d", app), Namespace: fmt.Sprintf("team-%d", app%10),
			VIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(app >> 8), byte(app)})},
			Ports: []meshconfig.ServicePort{
				{Name: "http", Port: 80, Protocol: "TCP", AppProtocol: "http"},
				{Name: "metrics", Port: 9090, TargetPort: 9090, Protocol: "TCP"},
			},
			Endpoints: make([]meshconfig.Endpoint, 20),
		}
		for j := range s.Endpoints {
			w := &resp.Workloads[app+j*nApps]
			s.Endpoints[j] = meshconfig.Endpoint{WorkloadUID: w.UID, IPs: w.IPs, Ready: j%10 != 9, Ports: map[string]uint16{"http": 8080}}
		}
		resp.Services[app] = s
	}
	return resp
}

// BenchmarkCodec times encoding and decoding a full view of 10 000
// workloads with the JSON codec and the proto one (bytes/op: the encoded
// size); UnmarshalGenerated decodes through the generated messages, as the
// proto codec did before decodeResponse.
func BenchmarkCodec(b *testing.B) {
	view := benchView()
	for _, c := range []encoding.Codec{jsonCodec{}, protoCodec{}} {
		data, err := c.Marshal(view)
		if err != nil {
			b.Fatal(err)
		}
		var decoded ConfigResponse
		if err := c.Unmarshal(data, &decoded); err != nil || !reflect.DeepEqual(view, &decoded) {
			b.Fatalf("%s: the view does not survive the codec (%v)", c.Name(), err)
		}
		b.Run(c.Name()+"/Marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Marshal(view); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
		b.Run(c.Name()+"/Unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r ConfigResponse
				if err := c.Unmarshal(data, &r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
		if c.Name() != CodecName {
			continue
		}
		// What the proto codec's Unmarshal did before decodeResponse.
		b.Run(c.Name()+"/UnmarshalGenerated", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeResponseGenerated(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
	}
}
