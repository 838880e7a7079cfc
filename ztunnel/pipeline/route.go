package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/l7"
)

// routeKey carries a request's routing (*routing) to pick.
type routeKey struct{}

// routing is where a request to a Service goes: the Route it took and
// the backend Service (and port) its weights chose for it.
type routing struct {
	route   *meshconfig.Route       // nil: no route fits: to the Service itself
	service *meshconfig.Service     // nil: the backend is not usable (err)
	port    *meshconfig.ServicePort // of service
	err     error

	mu      sync.Mutex
	release []func() // what the request holds (breaker counts), given back at its end
}

// hold registers f to run when the request ends.
func (d *routing) hold(f func()) {
	d.mu.Lock()
	d.release = append(d.release, f)
	d.mu.Unlock()
}

func (d *routing) end() {
	d.mu.Lock()
	fs := d.release
	d.release = nil
	d.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// errNoBackend is why a request whose route has no usable backend (none
// with weight, or one the config does not have: a Service that does not
// exist, a port it lacks) gets 500, as Gateway API asks.
var errNoBackend = errors.New("the route has no usable backend")

// routes wraps next, the forwarder of outbound flow f from pod p, with
// the routing and traffic policy of f's Service: each request takes the
// first of the Service's routes that fits it (meshconfig.Route, Gateway
// API order) and goes to a backend chosen by the route's weights (a
// request no route fits: to the Service itself), within the route's
// timeouts, else the backend's TrafficPolicy's (total, first byte,
// idle). pick then balances it over the backend's endpoints. A flow to
// no Service goes on as before.
func (pl *Pipeline) routes(f *flow.Flow, p *flow.Pod, next http.Handler) http.Handler {
	if f.Service == nil || f.ServicePort == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idx := pl.Index()
		svc := idx.Service(f.Service.Namespace, f.Service.Name)
		d := &routing{service: svc}
		if svc != nil {
			d.port = svc.Port(f.ServicePort.Port)
		}
		if rt := matchRoute(svc, p.Namespace, f.ServicePort.Port, r); rt != nil {
			d.route, d.service, d.port = rt, nil, nil
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
		}
		defer d.end()
		ctx := context.WithValue(r.Context(), routeKey{}, d)
		var tt meshconfig.Timeouts
		if d.service != nil && d.service.Traffic != nil && d.service.Traffic.Timeouts != nil {
			tt = *d.service.Traffic.Timeouts
		}
		total := tt.Total
		if d.route != nil && d.route.Timeout > 0 {
			total = d.route.Timeout
		}
		if total > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeoutCause(ctx, total, l7.ErrRequestTimeout)
			defer cancel()
		}
		if tt.FirstByte > 0 || tt.Idle > 0 {
			var cancel context.CancelCauseFunc
			ctx, cancel = context.WithCancelCause(ctx)
			defer cancel(nil)
			tw := &timedWriter{ResponseWriter: w}
			if tt.FirstByte > 0 {
				tw.first = time.AfterFunc(tt.FirstByte, func() { cancel(l7.ErrFirstByteTimeout) })
				defer tw.first.Stop()
			}
			if tt.Idle > 0 {
				tw.idleAfter = tt.Idle
				tw.idle = time.AfterFunc(tt.Idle, func() { cancel(l7.ErrIdleTimeout) })
				defer tw.idle.Stop()
			}
			w = tw
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// timedWriter stops the first-byte timer at the response's first write
// and pushes the idle timer back at every write.
type timedWriter struct {
	http.ResponseWriter
	first     *time.Timer
	idle      *time.Timer
	idleAfter time.Duration
}

func (w *timedWriter) wrote() {
	if w.first != nil {
		w.first.Stop()
	}
	if w.idle != nil {
		w.idle.Reset(w.idleAfter)
	}
}

func (w *timedWriter) WriteHeader(code int) {
	w.wrote()
	w.ResponseWriter.WriteHeader(code)
}

func (w *timedWriter) Write(b []byte) (int, error) {
	w.wrote()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
