package view

import (
	"fmt"
	"regexp"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// grpcRouteObject reads a GRPCRoute. A gRPC call is a POST to
// /<service>/<method>, so a method match is a path match: service and
// method Exact "/service/method", service only PathPrefix "/service/",
// method only RegularExpression "/[^/]+/method"; a RegularExpression
// method match is the path "/<service>/<method>" with each part a regular
// expression ([^/]+ when left out). A match without a method matches any
// path; a rule without matches once.
func grpcRouteObject(r *gwv1.GRPCRoute) *routeObject {
	o := &routeObject{kind: KindGRPCRoute, meta: &r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i := range r.Spec.Rules {
		rule, err := grpcRule(&r.Spec.Rules[i], fmt.Sprintf("spec.rules[%d]", i))
		if err != nil {
			o.unsupported = err.Error()
			o.rules = nil
			return o
		}
		o.rules = append(o.rules, rule)
	}
	return o
}

func grpcRule(r *gwv1.GRPCRouteRule, where string) (routeRule, error) {
	var out routeRule
	if len(r.Filters) > 0 {
		return out, unsupported("%s.filters: the mesh does not apply GRPCRoute filters (%s)", where, r.Filters[0].Type)
	}
	if r.SessionPersistence != nil {
		return out, unsupported("%s.sessionPersistence: the mesh does not support it here", where)
	}
	matches := r.Matches
	if len(matches) == 0 {
		matches = []gwv1.GRPCRouteMatch{{}}
	}
	for j := range matches {
		m, err := grpcMatch(&matches[j])
		if err != nil {
			return out, unsupported("%s.matches[%d].%v", where, j, err)
		}
		out.matches = append(out.matches, m)
	}
	for j := range r.BackendRefs {
		b := &r.BackendRefs[j]
		if len(b.Filters) > 0 {
			return out, unsupported("%s.backendRefs[%d].filters: the mesh does not apply GRPCRoute filters (%s)", where, j, b.Filters[0].Type)
		}
		out.backends = append(out.backends, b.BackendRef)
	}
	return out, nil
}

func grpcMatch(m *gwv1.GRPCRouteMatch) (meshconfig.RouteMatch, error) {
	var out meshconfig.RouteMatch
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service, ""), deref(mm.Method, "")
		switch t := deref(mm.Type, gwv1.GRPCMethodMatchExact); t {
		case gwv1.GRPCMethodMatchExact:
			switch {
			case svc != "" && method != "":
				out.PathType, out.Path = meshconfig.PathExact, "/"+svc+"/"+method
			case svc != "":
				out.PathType, out.Path = meshconfig.PathPrefix, "/"+svc+"/"
			case method != "":
				out.PathType, out.Path = meshconfig.PathRegex, "/[^/]+/"+regexp.QuoteMeta(method)
			}
		case gwv1.GRPCMethodMatchRegularExpression:
			for _, re := range []string{svc, method} {
				if err := checkRegex(re); err != nil {
					return out, fmt.Errorf("method: %w", err)
				}
			}
			out.PathType, out.Path = meshconfig.PathRegex, "/"+regexPart(svc)+"/"+regexPart(method)
		default:
			return out, fmt.Errorf("method: unknown type %q", t)
		}
	}
	for i, h := range m.Headers {
		v, err := valueMatch(string(h.Name), h.Value, (*string)(h.Type))
		if err != nil {
			return out, fmt.Errorf("headers[%d]: %w", i, err)
		}
		out.Headers = append(out.Headers, v)
	}
	return out, nil
}

// regexPart is one part of a gRPC path as a regular expression: re
// grouped, or any part when re is "".
func regexPart(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return "(?:" + re + ")"
}
