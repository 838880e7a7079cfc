// Package dashboard builds the Grafana dashboard of the mesh's metrics
// (ztunnel/record): per-agent request rate, success rate and p50/p95/p99
// latency, agent-protocol calls by method and tool, connections and bytes
// per edge, and policy denials, like `meshctl stat`. The chart ships it
// (deploy/charts/agentmesh/dashboards/agentmesh.json, written by `make
// dashboards`); a test keeps it fresh and every query's metrics and labels
// those ztunnel registers.
package dashboard

import (
	"encoding/json"
	"fmt"
)

// Query is one panel's PromQL with its legend.
type Query struct {
	Expr   string `json:"expr"`
	Legend string `json:"legendFormat"`
	RefID  string `json:"refId"`
}

// Panel is one time-series panel: its title, the unit of its values and
// its queries.
type Panel struct {
	Title, Unit string
	Queries     []Query
}

// rate is the rate window of every panel.
const rate = "$__rate_interval"

// ns is the namespace filter on destination (or source) labels.
const dstNS = `destination_namespace=~"$namespace"`

// Panels are the dashboard's panels, in reading order.
func Panels() []Panel {
	q := func(expr, legend string) Query { return Query{Expr: expr, Legend: legend} }
	byDst := "destination_namespace, destination_workload"
	reqs := fmt.Sprintf(`agentmesh_requests_total{reporter="destination",%s}`, dstNS)
	quant := func(p string) Query {
		return q(fmt.Sprintf(`histogram_quantile(%s, sum by (le, %s) (rate(agentmesh_request_duration_seconds_bucket{reporter="destination",%s}[%s])))`, p, byDst, dstNS, rate),
			"{{destination_namespace}}/{{destination_workload}} p"+p[2:])
	}
	return []Panel{
		{Title: "Requests per second by agent (destination)", Unit: "reqps", Queries: []Query{
			q(fmt.Sprintf(`sum by (%s) (rate(%s[%s]))`, byDst, reqs, rate), "{{destination_namespace}}/{{destination_workload}}")}},
		{Title: "Success rate by agent (status below 500)", Unit: "percentunit", Queries: []Query{
			q(fmt.Sprintf(`sum by (%s) (rate(agentmesh_requests_total{reporter="destination",%s,response_code!~"5..|0"}[%s])) / sum by (%s) (rate(%s[%s]))`,
				byDst, dstNS, rate, byDst, reqs, rate), "{{destination_namespace}}/{{destination_workload}}")}},
		{Title: "Latency p50 / p95 / p99 by agent", Unit: "s", Queries: []Query{quant("0.50"), quant("0.95"), quant("0.99")}},
		{Title: "MCP tool calls per second by tool and status", Unit: "reqps", Queries: []Query{
			q(fmt.Sprintf(`sum by (destination_workload, mcp_tool, response_code) (rate(agentmesh_requests_total{reporter="destination",%s,mcp_method="tools/call"}[%s]))`, dstNS, rate),
				"{{destination_workload}} {{mcp_tool}} {{response_code}}")}},
		{Title: "A2A calls per second by method and status", Unit: "reqps", Queries: []Query{
			q(fmt.Sprintf(`sum by (destination_workload, a2a_method, response_code) (rate(agentmesh_requests_total{reporter="destination",%s,a2a_method!=""}[%s]))`, dstNS, rate),
				"{{destination_workload}} {{a2a_method}} {{response_code}}")}},
		{Title: "Requests per second by caller -> callee (source)", Unit: "reqps", Queries: []Query{
			q(fmt.Sprintf(`sum by (source_workload, destination_workload) (rate(agentmesh_requests_total{reporter="source",source_namespace=~"$namespace"}[%s]))`, rate),
				"{{source_workload}} -> {{destination_workload}}")}},
		{Title: "New connections per second by caller -> callee", Unit: "cps", Queries: []Query{
			q(fmt.Sprintf(`sum by (source_workload, destination_workload, security) (rate(agentmesh_tcp_connections_opened_total{reporter="source",source_namespace=~"$namespace"}[%s]))`, rate),
				"{{source_workload}} -> {{destination_workload}} ({{security}})")}},
		{Title: "Bytes per second by agent (destination)", Unit: "Bps", Queries: []Query{
			q(fmt.Sprintf(`sum by (destination_workload) (rate(agentmesh_tcp_received_bytes_total{reporter="destination",%s}[%s]))`, dstNS, rate), "{{destination_workload}} in"),
			q(fmt.Sprintf(`sum by (destination_workload) (rate(agentmesh_tcp_sent_bytes_total{reporter="destination",%s}[%s]))`, dstNS, rate), "{{destination_workload}} out")}},
		{Title: "Policy denials per second by policy and reason", Unit: "reqps", Queries: []Query{
			q(fmt.Sprintf(`sum by (policy, reason) (rate(ztunnel_policy_decisions_total{decision="deny"}[%s]))`, rate), "{{policy}} {{reason}}")}},
	}
}

// JSON is the dashboard as Grafana imports it.
func JSON() ([]byte, error) {
	ps := Panels()
	var panels []any
	for i, p := range ps {
		for j := range p.Queries {
			p.Queries[j].RefID = string(rune('A' + j))
		}
		panels = append(panels, map[string]any{
			"id": i + 1, "title": p.Title, "type": "timeseries",
			"datasource":  map[string]any{"type": "prometheus", "uid": "${datasource}"},
			"gridPos":     map[string]any{"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
			"fieldConfig": map[string]any{"defaults": map[string]any{"unit": p.Unit}, "overrides": []any{}},
			"options":     map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "bottom"}},
			"targets":     p.Queries,
		})
	}
	d := map[string]any{
		"title": "AgentMesh", "uid": "agentmesh", "editable": true, "schemaVersion": 39,
		"tags": []string{"agentmesh"}, "timezone": "browser", "refresh": "30s",
		"time": map[string]any{"from": "now-1h", "to": "now"},
		"templating": map[string]any{"list": []any{
			map[string]any{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
			map[string]any{"name": "namespace", "type": "query", "label": "Namespace", "includeAll": true, "multi": true,
				"allValue": ".*", "datasource": map[string]any{"type": "prometheus", "uid": "${datasource}"},
				"query":   map[string]any{"query": "label_values(agentmesh_tcp_connections_opened_total, destination_namespace)", "refId": "ns"},
				"refresh": 2},
		}},
		"panels": panels,
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return append(b, '\n'), nil
}
