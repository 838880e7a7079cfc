package dnsproxy

import "testing"

func TestServiceName(t *testing.T) {
	const domain = "cluster.local"
	tests := []struct {
		qname, podNS string
		ns, name     string // "" = not a Service name
	}{
		{"data-validator.", "agents", "agents", "data-validator"},
		{"data-validator", "agents", "agents", "data-validator"},
		{"Data-Validator.", "agents", "agents", "data-validator"},
		{"data-validator.", "", "", ""},
		{"data-validator.shop.", "agents", "shop", "data-validator"},
		{"data-validator.shop.svc.", "agents", "shop", "data-validator"},
		{"data-validator.shop.svc.cluster.local.", "agents", "shop", "data-validator"},
		{"data-validator.shop.svc.cluster.local", "agents", "shop", "data-validator"},
		{"DATA-VALIDATOR.SHOP.SVC.CLUSTER.LOCAL.", "agents", "shop", "data-validator"},
		{"svc.svc.", "agents", "svc", "svc"},
		// Too many or too few labels before .svc.<domain>.
		{"a.b.shop.svc.cluster.local.", "agents", "", ""},
		{"shop.svc.cluster.local.", "agents", "", ""},
		{"svc.cluster.local.", "agents", "", ""},
		{"cluster.local.", "agents", "local", "cluster"}, // svc.ns form; the config decides
		// Three labels not ending in svc, and longer names: not ours.
		{"www.example.com.", "agents", "", ""},
		{"a.b.c.d.", "agents", "", ""},
		{"data-validator.shop.svc.other.domain.", "agents", "", ""},
		{".", "agents", "", ""},
		{"", "agents", "", ""},
	}
	for _, tt := range tests {
		ns, name, ok := serviceName(tt.qname, tt.podNS, domain)
		if ok != (tt.name != "") || ns != tt.ns || name != tt.name {
			t.Errorf("serviceName(%q, %q) = %q, %q, %v; want %q, %q", tt.qname, tt.podNS, ns, name, ok, tt.ns, tt.name)
		}
	}
}

func TestServiceNameOtherDomain(t *testing.T) {
	d := NormalizeDomain(".Mesh.Example.")
	if d != "mesh.example" {
		t.Fatalf("NormalizeDomain = %q", d)
	}
	if ns, name, ok := serviceName("api.shop.svc.mesh.example.", "x", d); !ok || ns != "shop" || name != "api" {
		t.Errorf("custom domain: %q %q %v", ns, name, ok)
	}
	if _, _, ok := serviceName("api.shop.svc.cluster.local.", "x", d); ok {
		t.Error("cluster.local answered under another cluster domain")
	}
}
