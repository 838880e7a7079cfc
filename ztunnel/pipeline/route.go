package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/l7"
)

// routeKey carries a request's routing (*routing) to pick.
type routeKey struct{}

// routing is where a request to a Service goes: the Route it took and
// the backend Service (and port) its weights chose for it.
type routing struct {
	route   *meshconfig.Route
	service *meshconfig.Service     // nil: the backend is not usable (err)
	port    *meshconfig.ServicePort // of service
	err     error
}

// errNoBackend is why a request whose route has no usable backend (none
// with weight, or one the config does not have: a Service that does not
// exist, a port it lacks) gets 500, as Gateway API asks.
var errNoBackend = errors.New("the route has no usable backend")

// routes wraps next, the forwarder of outbound flow f from pod p, with
// the routing of f's Service: each request takes the first of the
// Service's routes that fits it (meshconfig.Route, Gateway API order),
// and goes to a backend chosen by the route's weights, within the
// route's request timeout. A request no route fits, and a flow to no
// Service, goes on as before.
func (pl *Pipeline) routes(f *flow.Flow, p *flow.Pod, next http.Handler) http.Handler {
	if f.Service == nil || f.ServicePort == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idx := pl.Index()
		svc := idx.Service(f.Service.Namespace, f.Service.Name)
		rt := matchRoute(svc, p.Namespace, f.ServicePort.Port, r)
		if rt == nil {
			next.ServeHTTP(w, r)
			return
		}
		d := &routing{route: rt}
		if total := rt.TotalWeight(); total > 0 {
			b := rt.PickBackend(rand.Uint64N(total))
			ns, name, _ := strings.Cut(b.Service, "/")
			if s := idx.Service(ns, name); s != nil {
				if sp := s.Port(b.Port); sp != nil {
					d.service, d.port = s, sp
				}
			}
		}
		if d.service == nil {
			d.err = errNoBackend
		}
		ctx := context.WithValue(r.Context(), routeKey{}, d)
		if rt.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeoutCause(ctx, rt.Timeout, l7.ErrRequestTimeout)
			defer cancel()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// matchRoute is the route of svc that request r, sent by a pod of
// namespace clientNS to port, takes; nil when none fits. Following GAMMA,
// routes from the client's own namespace (consumer routes), when svc has
// any, replace those from svc's namespace (producer routes) for it;
// routes from other namespaces do not apply to it.
func matchRoute(svc *meshconfig.Service, clientNS string, port uint16, r *http.Request) *meshconfig.Route {
	if svc == nil || len(svc.Routes) == 0 {
		return nil
	}
	from := svc.Namespace
	if clientNS != svc.Namespace {
		for i := range svc.Routes {
			if routeNamespace(&svc.Routes[i]) == clientNS {
				from = clientNS
				break
			}
		}
	}
	for i := range svc.Routes {
		rt := &svc.Routes[i]
		if routeNamespace(rt) == from && rt.Matches(port, r) {
			return rt
		}
	}
	return nil
}

// routeNamespace is the namespace of the route object rt comes from.
func routeNamespace(rt *meshconfig.Route) string {
	ns, _, _ := strings.Cut(rt.Name, "/")
	return ns
}

// routingOf is r's routing, nil when it took no route.
func routingOf(r *http.Request) *routing {
	d, _ := r.Context().Value(routeKey{}).(*routing)
	return d
}
