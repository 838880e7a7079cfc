package configclient

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

func wl(uid, ip string) meshconfig.Workload {
	return meshconfig.Workload{UID: uid, Name: uid, Namespace: "ns", ServiceAccount: "sa", Node: "n1",
		IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

func TestViewMerge(t *testing.T) {
	v := newView()
	if err := v.merge(&configapi.ConfigResponse{Version: 1, Workloads: []meshconfig.Workload{wl("a", "10.0.0.1")}}); !errors.Is(err, errNoSnapshot) {
		t.Fatalf("delta before snapshot: %v, want errNoSnapshot", err)
	}
	steps := []struct {
		r         configapi.ConfigResponse
		workloads []string
		services  []string
	}{
		{configapi.ConfigResponse{Full: true, TrustDomain: "td", Workloads: []meshconfig.Workload{wl("b", "10.0.0.2"), wl("a", "10.0.0.1")},
			Services: []meshconfig.Service{{Name: "s", Namespace: "ns"}}}, []string{"a", "b"}, []string{"ns/s"}},
		{configapi.ConfigResponse{Workloads: []meshconfig.Workload{wl("c", "10.0.0.3")}, RemovedWorkloads: []string{"a", "unknown"},
			RemovedServices: []string{"ns/s"}}, []string{"b", "c"}, nil},
		{configapi.ConfigResponse{Full: true, Workloads: []meshconfig.Workload{wl("d", "10.0.0.4")}}, []string{"d"}, nil},
	}
	for i, s := range steps {
		if err := v.merge(&s.r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		c := v.config()
		var ws, ss []string
		for _, w := range c.Workloads {
			ws = append(ws, w.UID)
		}
		for _, x := range c.Services {
			ss = append(ss, x.Key())
		}
		if !slices.Equal(ws, s.workloads) || !slices.Equal(ss, s.services) {
			t.Errorf("step %d: workloads %v services %v, want %v %v", i, ws, ss, s.workloads, s.services)
		}
	}
}

// FuzzApply: whatever the controller sends, applying it never panics and
// an accepted config is valid.
func FuzzApply(f *testing.F) {
	seed, _ := json.Marshal(configapi.ConfigResponse{Full: true, TrustDomain: "td", Workloads: []meshconfig.Workload{wl("a", "10.0.0.1")}})
	f.Add(seed)
	f.Add([]byte(`{"version":2,"workloads":[{"uid":"a","ips":["10.0.0.1"]}],"removedWorkloads":["b"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r configapi.ConfigResponse
		if json.Unmarshal(data, &r) != nil {
			return
		}
		v := newView()
		if v.merge(&r) != nil {
			return
		}
		c := v.config()
		if c.Validate() == nil {
			if _, err := json.Marshal(c); err != nil {
				t.Fatalf("valid config does not encode: %v", err)
			}
		}
	})
}
