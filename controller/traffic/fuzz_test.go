package traffic

import (
	"encoding/json"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// FuzzConvert checks that Convert never panics on a spec a user could
// write and that whatever it accepts the data plane accepts too.
func FuzzConvert(f *testing.F) {
	for _, seed := range []string{
		`{"targetRefs": [{"kind": "Service", "name": "a"}]}`,
		`{"targetRefs": [{"kind": "Service", "name": "a"}], "loadBalancer": {"algorithm": "ConsistentHash", "hash": {"contextId": true}},
		  "sessionAffinity": {"key": {"header": "Mcp-Session-Id"}}, "timeouts": {"connect": "1s", "firstByte": "1h30m", "total": "0s"},
		  "retryBudget": {"percent": 20}, "circuitBreaker": {"maxRequests": 1}, "outlierDetection": {"baseEjectionTime": "10m"},
		  "rateLimit": {"perSource": {"requestsPerSecond": 1}, "tools": [{"name": "t", "requestsPerSecond": 2, "burst": 1}]}}`,
		`{"targetRefs": [{"kind": "Service", "name": "a"}], "outlierDetection": {"maxEjectionTime": "99999h", "maxEjectedPercent": -5}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tp := &v1alpha1.TrafficPolicy{}
		tp.Namespace, tp.Name = "ns", "p"
		if json.Unmarshal(raw, &tp.Spec) != nil {
			return
		}
		mc, err := Convert(tp)
		if err != nil {
			return
		}
		cfg := meshconfig.Config{Services: []meshconfig.Service{{Namespace: "ns", Name: "a", Traffic: mc}}}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Convert accepted %s, the data plane refuses it: %v", raw, err)
		}
	})
}
