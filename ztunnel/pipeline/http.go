package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/l7"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// perRequest reports whether f is proxied request by request: HTTP of
// any kind (detect) to a destination in the mesh, with the L7 path on.
func (pl *Pipeline) perRequest(f *flow.Flow) bool {
	if !pl.HTTP || f.Protocol == flow.Passthrough && f.Service == nil {
		return false
	}
	switch detect.App(f.AppProtocol) {
	case detect.HTTP1, detect.HTTP2, detect.GRPC, detect.A2A, detect.MCP:
		return true
	}
	return false
}

// outboundHTTP serves the requests the app sends on c (package l7): each
// request goes to an endpoint of f's Service the balancer picks for it
// (latency: the time to the response's first byte), or to f's
// destination pod, over its own try: an HBONE stream (kept alive for the
// next requests to that endpoint while the app's connection lasts), the
// same-node fast path, or plain TCP to an endpoint outside the mesh. A
// try whose connect fails is made again on another endpoint. Each request
// gets its line and metrics; the connection gets its access line when the
// app closes it.
func (pl *Pipeline) outboundHTTP(ctx context.Context, p *flow.Pod, f *flow.Flow, c net.Conn) {
	f.PerRequest = true
	cc := &countedConn{Conn: c}
	var requests atomic.Int64
	var last atomic.Pointer[flow.Flow] // the last request's flow
	app := detect.App(f.AppProtocol)
	fw := &l7.Forwarder{
		Log:      pl.Log,
		HTTP2:    app == detect.HTTP2 || app == detect.GRPC,
		Attempts: pl.Transport.Attempts(),
		Pick: func(r *http.Request, tried map[netip.AddrPort]bool, attempts int) (l7.Attempt, error) {
			return pl.pick(r, f, tried, attempts)
		},
		Dial: func(ctx context.Context, a l7.Attempt) (net.Conn, error) {
			t := a.Data.(*try)
			sending := t.sending
			if t.bc == nil {
				sending = nil
			}
			release, err := pl.dialBreaker(t)
			if err != nil {
				return nil, err
			}
			if t.connect > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, t.connect)
				defer cancel()
			}
			c, err := pl.Transport.DialUpstream(ctx, p, t.f, sending)
			if err != nil {
				release()
				return nil, err
			}
			// The path the dial took (HBONE, the same-node fast path,
			// plain TCP), for every request that goes over c.
			return &pathConn{Conn: c, protocol: t.f.Protocol, mtls: t.f.MTLS, release: release}, nil
		},
		ErrorStatus: errorStatus,
		Done: func(r *http.Request, res l7.Result) {
			requests.Add(1)
			var rf *flow.Flow
			if t, ok := res.Attempt.Data.(*try); ok {
				rf = t.f
			}
			if rf == nil {
				cp := *f
				rf = &cp
			} else {
				last.Store(rf)
			}
			q := record.Request{
				Method: r.Method, Authority: r.Host, Path: r.URL.Path, Status: res.Status, Err: res.Err,
				Attempts: res.Attempts, ReqBytes: res.ReqBytes, RespBytes: res.RespBytes, Duration: res.Duration,
				MCPMethod: mcpHeader(app, r, "Mcp-Method"), MCPTool: mcpHeader(app, r, "Mcp-Name"),
			}
			q.TraceID, q.SpanID = traceIDs(r.Context())
			pl.Record.Request(rf, q)
		},
	}
	h, closeIdle := fw.Handler()
	l7.ServeConn(ctx, cc, pl.traced(pl.routes(f, p, h), trace.SpanKindClient, f), pl.Log)
	closeIdle()
	f.Sent, f.Received = cc.read.Load(), cc.written.Load()
	f.Requests = int(requests.Load())
	if rf := last.Load(); rf != nil {
		// The connection's line names where its last request went.
		f.Protocol, f.MTLS, f.Upstream, f.DstWorkload, f.DstID = rf.Protocol, rf.MTLS, rf.Upstream, rf.DstWorkload, rf.DstID
	}
	pl.Record.Access(f)
}

// mcpHeader is an MCP request's header (the 2025-11 draft's Mcp-Method and
// Mcp-Name), "" for other protocols.
func mcpHeader(app detect.App, r *http.Request, name string) string {
	if app != detect.MCP {
		return ""
	}
	return r.Header.Get(name)
}

// try is the data of a request's try on one endpoint, and the balancer's
// count of it (nil bc: no Service).
type try struct {
	f      *flow.Flow
	bc     *balance.Conn
	start  time.Time
	sent   atomic.Int64 // unix ns the last HBONE CONNECT went out for it, 0: none
	failed bool

	// For outlier detection and the breaker (pl nil: no Service).
	pl      *Pipeline
	svc     string
	e       balance.Endpoint
	pol     *balance.Policy
	breaker *meshconfig.Breaker
	connect time.Duration // the TrafficPolicy's connect timeout, 0: the node's
}

// sending notes that a new upstream's CONNECT goes out (called from the
// dialing goroutine): the latency clock starts again there, so that a new
// HBONE connection's TLS handshake is not taken for the endpoint's.
func (t *try) sending() { t.sent.Store(time.Now().UnixNano()) }

// responded observes the time to the response's first byte (a 5xx:
// balance.Penalty, as a failed connect), and a 5xx as a failure for
// outlier detection.
func (t *try) responded(status int) {
	start := t.start
	if s := t.sent.Load(); s > start.UnixNano() {
		start = time.Unix(0, s)
	}
	if status >= 500 {
		// A fast failure must not look like a fast endpoint.
		t.bc.ConnectedIn(balance.Penalty)
	} else {
		t.bc.ConnectedIn(time.Since(start))
	}
	t.result(status >= 500)
}

// result tells outlier detection how the try ended.
func (t *try) result(failed bool) {
	if t.pl != nil && t.pl.Transport.Result(t.svc, &t.e, t.pol, failed) {
		t.pl.Record.TrafficEvent(t.svc, record.EventEjection)
		t.pl.Log.Warn("endpoint ejected", "service", t.svc, "endpoint", t.e.Addr.String(), "policy", t.pol.Name)
	}
}

// gotConn notes the path of the connection the try goes over.
func (t *try) gotConn(c net.Conn) {
	if pc, ok := c.(*pathConn); ok {
		t.f.Protocol, t.f.MTLS = pc.protocol, pc.mtls
	}
}

// fail observes a failed try (Failed ends the balancer's count too).
func (t *try) fail() {
	t.failed = true
	t.bc.Failed()
	t.result(true)
}

// done ends the balancer's count of a try that did not fail.
func (t *try) done() {
	if !t.failed {
		t.bc.Done()
	}
}

// pick chooses the destination of a request's next try: an endpoint of
// f's Service (package balance, skipping those tried while others are
// ready), or f's destination itself. Once every ready endpoint failed
// this request, it waits for the failover backoff or a new config (a
// rollout's new pod), whichever comes first, as a connection's failover
// does (transport.Failover), then picks among the endpoints in force.
func (pl *Pipeline) pick(r *http.Request, f *flow.Flow, tried map[netip.AddrPort]bool, attempts int) (l7.Attempt, error) {
	ctx := r.Context()
	rf := *f
	rf.Start = time.Now()
	var timeout time.Duration
	var retry *meshconfig.Retry
	var tp *meshconfig.TrafficPolicy
	d := routingOf(r)
	if d != nil {
		if d.route != nil {
			// A route sent it to one of its backends.
			if d.err != nil {
				return l7.Attempt{}, fmt.Errorf("route %s rule %d: %w", d.route.Name, d.route.Rule, d.err)
			}
			rf.Service, rf.ServicePort = d.service, d.port
			timeout, retry = d.route.BackendTimeout, d.route.Retry
		}
		if d.service != nil {
			tp = d.service.Traffic
		}
	}
	if rf.Service == nil {
		t := &try{f: &rf}
		return l7.Attempt{Addr: f.Dst, Data: t, GotConn: t.gotConn}, nil
	}
	svc := rf.Service.Key()
	if rf.ServicePort == nil {
		return l7.Attempt{}, fmt.Errorf("service %s has no port %d: %w", svc, f.Dst.Port(), transport.ErrNoEndpoint)
	}
	if attempts == 0 && d != nil && tp != nil && tp.Breaker != nil && tp.Breaker.MaxRequests > 0 {
		g := pl.breakers.get("requests/" + svc)
		if !g.take(tp.Breaker.MaxRequests) {
			pl.Record.TrafficEvent(svc, overflowRequests)
			return l7.Attempt{}, &errOverflow{overflowRequests}
		}
		d.hold(g.give)
	}
	pol := balancePolicy(tp)
	var key balance.Key
	if attempts == 0 || len(tried) == 0 {
		key = requestKey(r, tp)
	}
	changed := pl.ConfigChanged()
	cands := pl.Resolve.Endpoints(&rf)
	skip := func(e *balance.Endpoint) bool { return tried[e.Addr] }
	e, full := pl.Transport.PickFor(svc, cands, skip, pol, key)
	if e == nil && len(tried) > 0 && !full {
		if err := pl.Transport.Backoff(ctx, attempts-len(tried)+1, changed); err != nil {
			return l7.Attempt{}, err
		}
		cands = pl.Resolve.Endpoints(&rf)
		if e, full = pl.Transport.PickFor(svc, cands, skip, pol, key); e == nil {
			e, full = pl.Transport.PickFor(svc, cands, nil, pol, key)
		}
	}
	if e == nil {
		if full {
			pl.Record.TrafficEvent(svc, overflowRequestsPerEndpoint)
			return l7.Attempt{}, &errOverflow{overflowRequestsPerEndpoint}
		}
		return l7.Attempt{}, fmt.Errorf("service %s port %d: %w", svc, rf.ServicePort.Port, transport.ErrNoEndpoint)
	}
	pl.Resolve.Endpoint(&rf, e)
	t := &try{f: &rf, bc: pl.Transport.Begin(svc, e), start: time.Now(), pl: pl, svc: svc, e: *e, pol: pol, breaker: breakerOf(tp)}
	if tp != nil && tp.Timeouts != nil {
		t.connect = tp.Timeouts.Connect
	}
	a := l7.Attempt{Addr: e.Addr, Data: t, Responded: t.responded, Failed: t.fail, Done: t.done, GotConn: t.gotConn,
		Timeout: timeout}
	if retry != nil {
		// The budget counts the requests that may be retried for a
		// status: those of routes with a retry policy.
		budget := pl.budget(svc)
		if attempts == 0 {
			budget.request(time.Now())
		}
		ratio, floor := float64(budgetRatio), budgetMinPerSec
		if tp != nil && tp.RetryBudget != nil {
			ratio, floor = tp.RetryBudget.Ratio, tp.RetryBudget.MinPerSecond
		}
		a.Retry = l7.Retry{Codes: retry.Codes, Attempts: retry.Attempts, Backoff: retry.Backoff,
			Allow: func() bool {
				if !budget.allow(time.Now(), ratio, floor) {
					pl.Record.TrafficEvent(svc, record.EventBudgetExhausted)
					return false
				}
				pl.Record.TrafficEvent(svc, record.EventRetry)
				return true
			}}
		if a.Retry.Attempts == 0 && len(retry.Codes) > 0 {
			a.Retry.Attempts = meshconfig.DefaultRetryAttempts
		}
		if tp != nil && tp.RetryBackoff != nil {
			// The Service's backoff; the route's own base comes first.
			a.Retry.MaxBackoff = tp.RetryBackoff.Max
			if a.Retry.Backoff == 0 {
				a.Retry.Backoff = tp.RetryBackoff.Base
			}
		}
	}
	return a, nil
}

// breakerOf is tp's breaker, nil when it has none.
func breakerOf(tp *meshconfig.TrafficPolicy) *meshconfig.Breaker {
	if tp == nil {
		return nil
	}
	return tp.Breaker
}

// errorStatus is the status an app gets when no endpoint answered its
// request, and the reason the Agentmesh-Error header gives.
func errorStatus(err error) (int, string) {
	var se *hbone.StatusError
	switch {
	case errors.Is(err, errNoBackend):
		return http.StatusInternalServerError, "no_backend"
	}
	if limit, ok := isOverflow(err); ok {
		return http.StatusServiceUnavailable, limit
	}
	switch {
	case errors.Is(err, transport.ErrNoEndpoint):
		return http.StatusServiceUnavailable, "no_endpoint"
	case errors.Is(err, hbone.ErrDenied), errors.As(err, &se) && (se.Code == 401 || se.Code == 403):
		return http.StatusForbidden, "denied"
	case errors.Is(err, limits.ErrOverloaded):
		return http.StatusServiceUnavailable, "overloaded"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusGatewayTimeout, "connect_timeout"
	}
	var de *l7.DialError
	if errors.As(err, &de) {
		return http.StatusBadGateway, "connect_failed"
	}
	return http.StatusBadGateway, "upstream_failed"
}

// pathConn is an upstream connection and the path its dial took.
type pathConn struct {
	net.Conn
	protocol flow.Protocol
	mtls     bool
	release  func() // gives its breaker count back, once it is closed
	once     sync.Once
}

func (c *pathConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// dialBreaker checks a new upstream connection of t against its
// Service's breaker: the requests waiting for a connection (held while
// it dials) and the connections open to t's endpoint (held until the
// connection closes: release).
func (pl *Pipeline) dialBreaker(t *try) (release func(), err error) {
	release = func() {}
	b := t.breaker
	if b == nil {
		return release, nil
	}
	if b.MaxPendingRequests > 0 {
		g := pl.breakers.get("pending/" + t.svc)
		if !g.take(b.MaxPendingRequests) {
			pl.Record.TrafficEvent(t.svc, overflowPending)
			return release, &errOverflow{overflowPending}
		}
		defer g.give()
	}
	if b.MaxConnections > 0 {
		give, ok := pl.takeConnection(t.svc, t.e.Key, b.MaxConnections)
		if !ok {
			pl.Record.TrafficEvent(t.svc, overflowConnections)
			return release, &errOverflow{overflowConnections}
		}
		release = give
	}
	return release, nil
}

// countedConn counts the bytes of the app's connection.
type countedConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}
