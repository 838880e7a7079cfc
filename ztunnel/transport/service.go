package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
)

// Failover bounds how a connection to a Service tries its endpoints: a
// connect that fails before any byte (refused, timed out, an HBONE 503)
// is tried again at once on another endpoint; once every ready endpoint
// failed, they are tried again after an exponential backoff with jitter
// (or at once when a new config arrives), while attempts and the budget
// last.
type Failover struct {
	// Attempts is the connects per connection, the first included.
	Attempts int
	// Timeout bounds one connect (never more than the dial timeout).
	Timeout time.Duration
	// Budget bounds all the attempts and backoffs of one connection.
	Budget time.Duration
	// BackoffBase is the first backoff's bound, doubled per retry up to
	// BackoffMax.
	BackoffBase, BackoffMax time.Duration
}

// DefaultFailover is the failover of the flags' defaults.
var DefaultFailover = Failover{
	Attempts: 5, Timeout: time.Second, Budget: 3 * time.Second,
	BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
}

// Validate checks the bounds.
func (o Failover) Validate() error {
	switch {
	case o.Attempts < 1:
		return fmt.Errorf("connect attempts %d: at least 1", o.Attempts)
	case o.Timeout <= 0 || o.Budget <= 0:
		return errors.New("connect timeout and budget must be positive")
	case o.BackoffBase < 0 || o.BackoffMax < o.BackoffBase:
		return fmt.Errorf("backoff %s..%s: want 0 <= base <= max", o.BackoffBase, o.BackoffMax)
	}
	return nil
}

// backoff is the wait before the n-th try (1-based) of endpoints that
// all failed: with d = min(max, base*2^(n-1)), uniform in [d/2, d]
// ("equal jitter": spread, yet growing, so a few quick tries do not use up
// the attempts before the control plane says which endpoints replace the
// ones that failed).
func (o Failover) backoff(n int) time.Duration {
	d := o.BackoffBase << (n - 1)
	if d > o.BackoffMax || d <= 0 {
		d = o.BackoffMax
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// untried reports whether cands has a ready endpoint not in tried.
func untried(cands []balance.Endpoint, tried map[string]bool) bool {
	for i := range cands {
		if cands[i].Ready && !tried[cands[i].Key] {
			return true
		}
	}
	return false
}

// ErrNoEndpoint is the error of a connection to a Service with no ready
// endpoint for its port.
var ErrNoEndpoint = errors.New("no ready endpoint")

// Endpoints are the candidates of one Service connection, read again
// before every attempt so that a retry sees the config in force: Current
// returns them and a channel closed when the config changes after that
// (nil: never), Name sets a flow's destination to the endpoint about to be
// tried (resolve.Resolver.Endpoint).
type Endpoints struct {
	Current func() ([]balance.Endpoint, <-chan struct{})
	Name    func(f *flow.Flow, e *balance.Endpoint)
	// Traffic is what the Service's TrafficPolicy asks of a connection
	// (the zero value: the defaults).
	Traffic Traffic
}

// Traffic is the part of a Service's TrafficPolicy that applies to an
// opaque TCP connection: how its endpoint is chosen, how long one connect
// may take, the connections an endpoint may have open, and outlier
// ejection on failed connects.
type Traffic struct {
	// Policy chooses the endpoint (algorithm, outlier ejection; its
	// per-endpoint request limit is the caller's to leave 0). nil:
	// peak-EWMA.
	Policy *balance.Policy
	// Connect bounds one connect (0: the failover's timeout).
	Connect time.Duration
	// Admit takes one of endpoint e's connection slots (nil: no limit):
	// false when e has none left, and the connection goes to another
	// endpoint or, when every one is at its limit, is refused
	// (ErrConnectionLimit); release gives the slot back.
	Admit func(e *balance.Endpoint) (release func(), ok bool)
	// Ejected is told that a failed connect ejected e (nil: nobody).
	Ejected func(e *balance.Endpoint)
}

// defaultPolicy is the balancer's policy without a TrafficPolicy.
var defaultPolicy balance.Policy

// ErrConnectionLimit is the error of a connection to a Service whose
// every ready endpoint has as many connections open as its TrafficPolicy
// allows (breaker.maxConnections).
var ErrConnectionLimit = errors.New("every endpoint at its connection limit")

// DialService opens the upstream of f, a connection to Service f.Service,
// on an endpoint the balancer chooses, trying others on failure (see
// Failover): after a failed connect it waits for the backoff or for a new
// config, whichever comes first, and picks again among the endpoints in
// force then (an endpoint that just became ready during a rollout is taken
// at once). Once the endpoints that failed are gone and no other is ready
// it waits for a config that brings one, within the budget; with none
// ready at the start it refuses at once. On success f names the endpoint it reached, and done must be
// called once the connection has ended (it ends the balancer's count).
func (t *Transport) DialService(ctx context.Context, p *flow.Pod, f *flow.Flow, eps Endpoints) (c net.Conn, done func(), err error) {
	svc := f.Service.Key()
	if f.ServicePort == nil {
		t.rec.ServiceConnect(svc, "no_port")
		return nil, nil, fmt.Errorf("service %s has no port %d", svc, f.Dst.Port())
	}
	o := t.failover
	tr := eps.Traffic
	pol := tr.Policy
	if pol == nil {
		pol = &defaultPolicy
	}
	connect := min(o.Timeout, t.dialTimeout)
	if tr.Connect > 0 {
		connect = tr.Connect
	}
	budget, cancel := context.WithTimeout(ctx, max(o.Budget, connect))
	defer cancel()
	tried := map[string]bool{}
	var full map[string]bool // at their connection limit (made on the first)
	skip := func(e *balance.Endpoint) bool { return tried[e.Key] || full[e.Key] }
	var last error
	attempt, retries := 0, 0
	for {
		cands, changed := eps.Current()
		e, _ := t.balancer.PickFor(svc, cands, skip, pol, balance.Key{})
		if e == nil && attempt > 0 {
			// Every ready endpoint failed once: the next try may go to
			// any of them again.
			clear(tried)
			e, _ = t.balancer.PickFor(svc, cands, skip, pol, balance.Key{})
		}
		var release func() // the connection slot, nil without a limit
		if e != nil && tr.Admit != nil {
			r, ok := tr.Admit(e)
			if !ok {
				if full == nil {
					full = map[string]bool{}
				}
				full[e.Key] = true
				continue // another endpoint, if one has a slot
			}
			release = r
		}
		var timer *time.Timer
		var wait <-chan time.Time // nil: only a config change or the budget end the wait
		switch {
		case e == nil && len(full) > 0:
			t.rec.ServiceConnect(svc, "connection_limit")
			if last != nil {
				return nil, nil, fmt.Errorf("service %s: %w; %w", svc, ErrConnectionLimit, last)
			}
			return nil, nil, fmt.Errorf("service %s: %w", svc, ErrConnectionLimit)
		case e == nil && attempt == 0:
			t.rec.ServiceConnect(svc, "no_endpoint")
			return nil, nil, fmt.Errorf("service %s port %d: %w", svc, f.ServicePort.Port, ErrNoEndpoint)
		case e == nil:
			// The endpoints that failed are gone or not ready any more:
			// wait for the config to bring others (a rollout's new pod),
			// within the budget.
			if !errors.Is(last, ErrNoEndpoint) {
				last = fmt.Errorf("%w after %d attempts: %w", ErrNoEndpoint, attempt, last)
			}
		default:
			attempt++
			tried[e.Key] = true
			eps.Name(f, e)
			f.Attempts = attempt
			bc := t.balancer.Begin(svc, e)
			actx, acancel := context.WithTimeout(budget, connect)
			c, err := t.dialTo(actx, p, f, e.Addr, bc.Restart)
			acancel()
			if err == nil {
				bc.Connected()
				t.balancer.Result(svc, e, pol, false)
				t.rec.ServiceConnect(svc, "ok")
				if release == nil {
					return c, bc.Done, nil
				}
				return c, func() { bc.Done(); release() }, nil
			}
			bc.Failed()
			if release != nil {
				release()
			}
			last = fmt.Errorf("endpoint %s (attempt %d of %d): %w", e.Addr, attempt, o.Attempts, err)
			reason := retryReason(err)
			// A connect that failed on the endpoint's side counts
			// towards its ejection; a refusal by policy does not.
			if reason != "" && t.balancer.Result(svc, e, pol, true) && tr.Ejected != nil {
				tr.Ejected(e)
			}
			if reason == "" || attempt >= o.Attempts || ctx.Err() != nil {
				t.rec.ServiceConnect(svc, "error")
				return nil, nil, fmt.Errorf("service %s: %w", svc, last)
			}
			t.rec.ServiceRetry(svc, reason)
			if untried(cands, tried) {
				continue // fail over at once: the failure was that endpoint's
			}
			// Every ready endpoint failed: back off before trying them
			// again, unless a new config comes first.
			retries++
			clear(full) // slots may have freed meanwhile
			timer = time.NewTimer(o.backoff(retries))
			wait = timer.C
		}
		select {
		case <-wait:
		case <-changed:
		case <-budget.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if budget.Err() != nil {
			t.rec.ServiceConnect(svc, "error")
			return nil, nil, fmt.Errorf("service %s: %w; connect budget %s used up", svc, last, o.Budget)
		}
	}
}

// retryReason says why err is worth a try on another endpoint ("" when it
// is not: an overloaded node, a refusal by the destination's policy).
func retryReason(err error) string {
	var se *hbone.StatusError
	switch {
	case errors.Is(err, limits.ErrOverloaded), errors.Is(err, hbone.ErrDenied):
		return "" // a same-node refusal by policy, as a 401 over HBONE
	case errors.As(err, &se):
		if se.Code == 401 || se.Code == 403 {
			return ""
		}
		return fmt.Sprintf("status_%d", se.Code)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return "error"
}

// Pick chooses an endpoint of service among eps for one request (package
// balance), skipping those skip reports; nil when none is ready.
func (t *Transport) Pick(service string, eps []balance.Endpoint, skip func(*balance.Endpoint) bool) *balance.Endpoint {
	return t.balancer.Pick(service, eps, skip)
}

// PickFor is Pick under a Service's traffic policy p with the request's
// key (balance.Balancer.PickFor); full when endpoints were left out only
// for their request limit.
func (t *Transport) PickFor(service string, eps []balance.Endpoint, skip func(*balance.Endpoint) bool, p *balance.Policy, key balance.Key) (*balance.Endpoint, bool) {
	return t.balancer.PickFor(service, eps, skip, p, key)
}

// Result observes a request's end on endpoint e for outlier detection
// (balance.Balancer.Result); true when it ejected e.
func (t *Transport) Result(service string, e *balance.Endpoint, p *balance.Policy, failed bool) bool {
	return t.balancer.Result(service, e, p, failed)
}

// Begin starts the balancer's count of one request to e (its latency is
// the time to the response's first byte: Connected when it arrived).
func (t *Transport) Begin(service string, e *balance.Endpoint) *balance.Conn {
	return t.balancer.Begin(service, e)
}

// Backoff waits before the n-th (1-based) round of tries of a request
// whose every ready endpoint failed: the failover's jittered backoff, or
// until changed is closed (a new config), or ctx ends (its error).
func (t *Transport) Backoff(ctx context.Context, n int, changed <-chan struct{}) error {
	timer := time.NewTimer(t.failover.backoff(n))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-changed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Attempts is the tries one connection or request may make (Failover).
func (t *Transport) Attempts() int { return t.failover.Attempts }

// DialUpstream opens an upstream of f at f.Upstream (a Service endpoint
// resolve.Resolver.Endpoint named) or else f.Dst, bounded by the connect
// timeout: what a request's try on one endpoint connects over. sending,
// when set, is called as an HBONE CONNECT goes out.
func (t *Transport) DialUpstream(ctx context.Context, p *flow.Pod, f *flow.Flow, sending func()) (net.Conn, error) {
	dst := f.Upstream
	if !dst.IsValid() {
		dst = f.Dst
	}
	ctx, cancel := context.WithTimeout(ctx, min(t.failover.Timeout, t.dialTimeout))
	defer cancel()
	return t.dialTo(ctx, p, f, dst, sending)
}
