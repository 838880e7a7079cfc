package ztunnel

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// serveServices answers debug.ServicesPath.
func (n *Node) serveServices(w http.ResponseWriter, r *http.Request) {
	idx := n.Index()
	var out []debug.Service
	if q := r.URL.Query().Get("service"); q != "" {
		ns, name, ok := strings.Cut(q, "/")
		if !ok || ns == "" || name == "" {
			http.Error(w, "bad service "+strconv.Quote(q)+": want namespace/name", http.StatusBadRequest)
			return
		}
		s := idx.Service(ns, name)
		if s == nil {
			http.Error(w, "no service "+q+" in the mesh config", http.StatusNotFound)
			return
		}
		out = append(out, n.debugService(idx, s))
	} else {
		out = make([]debug.Service, 0, len(idx.Config.Services))
		for i := range idx.Config.Services {
			out = append(out, n.debugService(idx, &idx.Config.Services[i]))
		}
	}
	writeJSON(w, out)
}

// debugService is s with its endpoints, one per pod (the slices of both
// families merged), and the balancer's state of each.
func (n *Node) debugService(idx *meshconfig.Index, s *meshconfig.Service) debug.Service {
	ds := debug.Service{Name: s.Name, Namespace: s.Namespace, VIPs: s.VIPs, Ports: []debug.ServicePort{}, Endpoints: []debug.Endpoint{}, Traffic: s.Traffic}
	for _, r := range s.Routes {
		dr := debug.Route{Name: r.Name, Kind: r.Kind, Rule: r.Rule, Port: r.Port, Match: matchString(&r.Match),
			Backends: r.Backends, Retry: r.Retry}
		if r.Timeout > 0 {
			dr.Timeout = r.Timeout.String()
		}
		if r.BackendTimeout > 0 {
			dr.Backend = r.BackendTimeout.String()
		}
		ds.Routes = append(ds.Routes, dr)
	}
	for _, p := range s.Ports {
		tp := strconv.Itoa(int(p.TargetPort))
		if p.TargetPort == 0 {
			tp = cmp.Or(p.Name, "(unnamed)") + " (named)"
		}
		ds.Ports = append(ds.Ports, debug.ServicePort{Name: p.Name, Port: p.Port, TargetPort: tp, AppProtocol: p.AppProtocol})
	}
	at := map[string]int{}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if len(e.IPs) == 0 {
			continue
		}
		w := idx.ByUID(e.WorkloadUID)
		if w == nil {
			w = idx.ByIP(e.IPs[0])
		}
		key := e.IPs[0].String()
		if w != nil {
			key = w.UID
		}
		if j, ok := at[key]; ok {
			de := &ds.Endpoints[j]
			de.Addrs = append(de.Addrs, e.IPs...)
			de.Ready = de.Ready || e.Ready
			continue
		}
		de := debug.Endpoint{Workload: record.WorkloadName(w), Addrs: slices.Clone(e.IPs), Ports: e.Ports, Ready: e.Ready}
		be := balance.Endpoint{Key: key, Workload: w}
		if be.Mesh() {
			de.Mesh, de.Identity = true, idx.Config.Identity(w).String()
		}
		st := n.balancer.Snapshot(s.Key(), &be)
		de.EWMAMillis = float64(st.EWMA.Microseconds()) / 1000
		de.Open, de.Picks, de.Failures, de.Ejected = st.Open, st.Picks, st.Failures, st.Ejected
		at[key] = len(ds.Endpoints)
		ds.Endpoints = append(ds.Endpoints, de)
	}
	return ds
}

// matchString is a route match as a person reads it: "GET /api/*
// x-variant=b", "*" for every request.
func matchString(m *meshconfig.RouteMatch) string {
	var parts []string
	if m.Method != "" {
		parts = append(parts, m.Method)
	}
	switch m.PathType {
	case meshconfig.PathExact:
		parts = append(parts, m.Path)
	case meshconfig.PathPrefix:
		parts = append(parts, strings.TrimSuffix(m.Path, "/")+"/*")
	case meshconfig.PathRegex:
		parts = append(parts, "~"+m.Path)
	}
	for _, h := range m.Headers {
		op := "="
		if h.Regex {
			op = "~"
		}
		parts = append(parts, h.Name+op+h.Value)
	}
	for _, q := range m.Query {
		op := "="
		if q.Regex {
			op = "~"
		}
		parts = append(parts, "?"+q.Name+op+q.Value)
	}
	if len(parts) == 0 {
		return "*"
	}
	return strings.Join(parts, " ")
}
