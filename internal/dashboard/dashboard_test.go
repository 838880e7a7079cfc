package dashboard

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

const chartFile = "../../deploy/charts/agentmesh/dashboards/agentmesh.json"

// TestDashboardFresh: the chart's dashboard is what this package builds
// (make dashboards writes it).
func TestDashboardFresh(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(chartFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run make dashboards", chartFile)
	}
	var d map[string]any
	if err := json.Unmarshal(got, &d); err != nil || len(d["panels"].([]any)) != len(Panels()) {
		t.Errorf("dashboard JSON: %v", err)
	}
}

var (
	selector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	byClause = regexp.MustCompile(`by \(([^)]*)\)`)
)

// TestDashboardQueries: every metric a query selects is one ztunnel
// registers, and every label it matches or groups by is one of that
// metric's labels.
func TestDashboardQueries(t *testing.T) {
	families := registered(t)
	for _, p := range Panels() {
		for _, q := range p.Queries {
			sels := selector.FindAllStringSubmatch(q.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("%s: %q selects no metric", p.Title, q.Expr)
			}
			var labels map[string]bool
			for _, s := range sels {
				name := s[1]
				fam, ok := families[name]
				if !ok {
					fam, ok = families[strings.TrimSuffix(name, "_bucket")]
					if ok {
						fam["le"] = true
					}
				}
				if !ok {
					t.Errorf("%s: metric %s is not registered by ztunnel", p.Title, name)
					continue
				}
				labels = fam
				for _, m := range matcher.FindAllStringSubmatch(s[2], -1) {
					if !fam[m[1]] {
						t.Errorf("%s: %s has no label %s", p.Title, name, m[1])
					}
				}
			}
			for _, b := range byClause.FindAllStringSubmatch(q.Expr, -1) {
				for l := range strings.SplitSeq(b[1], ",") {
					if l = strings.TrimSpace(l); labels != nil && !labels[l] {
						t.Errorf("%s: groups by %s, which its metrics do not have", p.Title, l)
					}
				}
			}
		}
	}
}

// registered records one of everything on a recorder and returns the
// metric families it exposes with their label names.
func registered(t *testing.T) map[string]map[string]bool {
	reg := prometheus.NewRegistry()
	rec := record.New(slog.New(slog.DiscardHandler), reg, 0)
	w := &meshconfig.Workload{Name: "a", Namespace: "ns"}
	f := flow.New(flow.Inbound, flow.HBONE, netip.AddrPort{}, netip.AddrPort{})
	f.SrcWorkload, f.DstWorkload, f.AppProtocol = w, w, "mcp"
	rec.Connected(f)
	rec.Access(f)
	rec.Request(f, record.Request{Status: 200, Duration: time.Millisecond, MCPMethod: "tools/call", MCPTool: "x", A2AMethod: "message/send"})
	rec.Decided(policy.Decision{Reason: policy.ReasonNoAllowMatch, Rule: -1})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		out[mf.GetName()] = labels
	}
	return out
}
