package pipeline

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// What a Service's TrafficPolicy asks of the source tunnel, beyond
// routes: how endpoints are chosen (balance.Policy: algorithm, outlier
// ejection, a per-endpoint request limit), the affinity key of a request,
// and the Service's breaker.

// balancePolicy is the balancer's part of tp (nil tp: the defaults).
func balancePolicy(tp *meshconfig.TrafficPolicy) *balance.Policy {
	p := &balance.Policy{}
	if tp == nil {
		return p
	}
	p.Name = tp.Name
	if tp.LoadBalancer != nil {
		p.Algorithm = tp.LoadBalancer.Algorithm
	}
	p.Outlier = tp.Outlier
	if tp.Breaker != nil {
		p.MaxRequestsPerEndpoint = tp.Breaker.MaxRequestsPerEndpoint
	}
	return p
}

// connTraffic is what svc's TrafficPolicy asks of an opaque TCP
// connection to it (transport.Traffic): the balancer's algorithm and
// outlier ejection on failed connects, the connect timeout, and the
// breaker's connections per endpoint (the same count as the HBONE
// streams of its requests). Request limits do not apply to a connection.
func (pl *Pipeline) connTraffic(svc *meshconfig.Service) transport.Traffic {
	tp := svc.Traffic
	if tp == nil {
		return transport.Traffic{}
	}
	key := svc.Key()
	pol := balancePolicy(tp)
	pol.MaxRequestsPerEndpoint = 0
	tr := transport.Traffic{Policy: pol}
	if tp.Timeouts != nil {
		tr.Connect = tp.Timeouts.Connect
	}
	if b := tp.Breaker; b != nil && b.MaxConnections > 0 {
		limit := b.MaxConnections
		tr.Admit = func(e *balance.Endpoint) (func(), bool) { return pl.takeConnection(key, e.Key, limit) }
	}
	if tp.Outlier != nil {
		tr.Ejected = func(e *balance.Endpoint) {
			pl.Record.TrafficEvent(key, record.EventEjection)
			pl.Log.Warn("endpoint ejected", "service", key, "endpoint", e.Addr.String(), "policy", tp.Name, "after", "failed connects")
		}
	}
	return tr
}

// takeConnection takes one of the limit connection slots of endpoint of
// service (breaker.maxConnections: HBONE streams of requests and opaque
// connections alike); false when none is left, else give returns it.
func (pl *Pipeline) takeConnection(service, endpoint string, limit int) (give func(), ok bool) {
	g := pl.breakers.get("connections/" + service + "/" + endpoint)
	if !g.take(limit) {
		return nil, false
	}
	return g.give, true
}

// requestKey is r's affinity key under tp (or its consistent-hash key):
// the header's or cookie's value, or the A2A contextId its body names.
func requestKey(r *http.Request, tp *meshconfig.TrafficPolicy) balance.Key {
	if tp == nil {
		return balance.Key{}
	}
	var k *meshconfig.HashKey
	switch {
	case tp.Affinity != nil:
		k = &tp.Affinity.Key
	case tp.LoadBalancer != nil && tp.LoadBalancer.Algorithm == meshconfig.LBConsistentHash:
		k = tp.LoadBalancer.Hash
	}
	if k == nil {
		return balance.Key{}
	}
	switch {
	case k.Header != "":
		if v := r.Header.Get(k.Header); v != "" {
			return balance.Key{Value: v, Has: true}
		}
	case k.Cookie != "":
		if c, err := r.Cookie(k.Cookie); err == nil && c.Value != "" {
			return balance.Key{Value: c.Value, Has: true}
		}
	case k.ContextID:
		// The body's bounded prefix is read and put back (readCalls).
		if _, _, _, _, _, id := readCalls(r, false); id != "" {
			return balance.Key{Value: id, Has: true}
		}
	}
	return balance.Key{}
}

// errOverflow is a request a breaker refused: 503 at once, the limit in
// the Agentmesh-Error header.
type errOverflow struct{ limit string }

func (e *errOverflow) Error() string { return fmt.Sprintf("circuit breaker: %s reached", e.limit) }

// Breaker limits, as the Agentmesh-Error header names them.
const (
	overflowRequests            = "overflow_max_requests"
	overflowPending             = "overflow_max_pending_requests"
	overflowRequestsPerEndpoint = "overflow_max_requests_per_endpoint"
	overflowConnections         = "overflow_max_connections"
)

func isOverflow(err error) (string, bool) {
	var o *errOverflow
	if errors.As(err, &o) {
		return o.limit, true
	}
	return "", false
}

// gauge is a count of things open, bounded by a limit.
type gauge struct{ n atomic.Int64 }

// take counts one more if that stays within limit (0: none).
func (g *gauge) take(limit int) bool {
	if limit <= 0 {
		g.n.Add(1)
		return true
	}
	for {
		n := g.n.Load()
		if n >= int64(limit) {
			return false
		}
		if g.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *gauge) give() { g.n.Add(-1) }

// gauges are the breaker's counts of one node's source tunnel, by key.
type gauges struct{ m sync.Map }

func (gs *gauges) get(key string) *gauge {
	if g, ok := gs.m.Load(key); ok {
		return g.(*gauge)
	}
	g, _ := gs.m.LoadOrStore(key, &gauge{})
	return g.(*gauge)
}
