package configclient

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// TestIncrementalMatchesFull: over random streams of full responses,
// chunked versions and deltas (workloads moving addresses, clashing,
// losing required fields, policies changing under their references,
// services coming and going), every version the client builds by patching
// the accepted config is exactly the config a full rebuild of the mirror
// gives, and a version is refused exactly when the full validation
// refuses it.
func TestIncrementalMatchesFull(t *testing.T) {
	bundle, _, err := pki.GenerateCA("td", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var got *meshconfig.Config
		c, err := New(Options{Addr: "x", CAFile: "x", TokenFile: "x", Node: "n1", Component: configapi.ComponentZtunnel,
			Logger: slog.New(slog.DiscardHandler), OnConfig: func(cfg *meshconfig.Config) error { got = cfg; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		v := newView()
		for step := range 40 {
			rs := randomVersion(rng, step == 0 || rng.IntN(15) == 0, bundle)
			var applyErr error
			for _, r := range rs {
				applyErr = c.apply(v, r)
			}
			want := v.mapConfig() // from the mirror's maps, the slow way
			wantErr := want.Validate()
			switch {
			case wantErr != nil && applyErr == nil:
				t.Fatalf("seed %d step %d: accepted a version the full validation refuses: %v", seed, step, wantErr)
			case wantErr == nil && applyErr != nil:
				t.Fatalf("seed %d step %d: refused a valid version: %v", seed, step, applyErr)
			case wantErr == nil && !reflect.DeepEqual(c.accepted, want):
				t.Fatalf("seed %d step %d: patched config differs from the full build:\n got %+v\nwant %+v", seed, step, c.accepted, want)
			case wantErr == nil && got != nil && !reflect.DeepEqual(got, want):
				t.Fatalf("seed %d step %d: OnConfig had an older config", seed, step)
			}
		}
	}
}

// randomVersion is one version: a full response (maybe in chunks) or a
// delta over a small universe of uids, addresses, services and policies.
func randomVersion(rng *rand.Rand, full bool, bundle []byte) []*configapi.ConfigResponse {
	r := &configapi.ConfigResponse{Full: full, TrustDomain: "td", TrustBundlePEM: bundle}
	n := 1 + rng.IntN(4)
	if full {
		n = rng.IntN(12)
	}
	for range n {
		if !full && rng.IntN(4) == 0 {
			r.RemovedWorkloads = append(r.RemovedWorkloads, fmt.Sprintf("u%d", rng.IntN(10)))
			continue
		}
		r.Workloads = append(r.Workloads, randomWorkload(rng))
	}
	for range rng.IntN(3) {
		k := fmt.Sprintf("s%d", rng.IntN(4))
		if !full && rng.IntN(3) == 0 {
			r.RemovedServices = append(r.RemovedServices, "ns/"+k)
			continue
		}
		r.Services = append(r.Services, meshconfig.Service{Name: k, Namespace: "ns",
			Ports: []meshconfig.ServicePort{{Port: uint16(80 + rng.IntN(3))}}})
	}
	for range rng.IntN(3) {
		r.Policies = append(r.Policies, body(fmt.Sprintf("p%d", rng.IntN(3)), uint16(80+rng.IntN(3))))
	}
	if !full || rng.IntN(2) == 0 || len(r.Workloads) < 2 {
		return []*configapi.ConfigResponse{r}
	}
	// In two chunks: the second upserts some of the first's workloads
	// again, as the controller's node-specific chunk does.
	first := *r
	first.More, first.Services, first.Policies = true, nil, nil
	second := &configapi.ConfigResponse{TrustDomain: r.TrustDomain, TrustBundlePEM: bundle, Services: r.Services,
		Policies: r.Policies, Workloads: r.Workloads[len(r.Workloads)/2:]}
	return []*configapi.ConfigResponse{&first, second}
}

func randomWorkload(rng *rand.Rand) meshconfig.Workload {
	uid := fmt.Sprintf("u%d", rng.IntN(10))
	w := meshconfig.Workload{UID: uid, Name: uid, Namespace: "ns", ServiceAccount: "sa", Node: "n1",
		IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(14))})}}
	if rng.IntN(30) == 0 {
		w.ServiceAccount = "" // invalid
	}
	if rng.IntN(3) == 0 {
		var refs []string
		for range 1 + rng.IntN(2) {
			refs = append(refs, fmt.Sprintf("ns/p%d", rng.IntN(3)))
		}
		w.Authz = &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow, PolicyRefs: refs}
	}
	return w
}
