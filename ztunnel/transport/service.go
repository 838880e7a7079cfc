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
// is tried again on another endpoint after an exponential backoff with
// full jitter, while attempts and the budget last.
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
	Attempts: 3, Timeout: time.Second, Budget: 3 * time.Second,
	BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond,
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

// backoff is the wait before retry n (1-based): uniform in [0, min(max,
// base*2^(n-1))].
func (o Failover) backoff(n int) time.Duration {
	d := o.BackoffBase << (n - 1)
	if d > o.BackoffMax || d <= 0 {
		d = o.BackoffMax
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// ErrNoEndpoint is the error of a connection to a Service with no ready
// endpoint for its port.
var ErrNoEndpoint = errors.New("no ready endpoint")

// Named is how DialService sets a flow's destination to the endpoint it
// is about to try (resolve.Resolver.Endpoint).
type Named func(f *flow.Flow, e *balance.Endpoint)

// DialService opens the upstream of f, a connection to Service f.Service,
// on one of eps chosen by the balancer, trying others on failure (see
// Failover). On success f names the endpoint it reached, and done must be
// called once the connection has ended (it ends the balancer's count).
func (t *Transport) DialService(ctx context.Context, p *flow.Pod, f *flow.Flow, eps []balance.Endpoint, name Named) (c net.Conn, done func(), err error) {
	svc := f.Service.Key()
	if f.ServicePort == nil {
		t.rec.ServiceConnect(svc, "no_port")
		return nil, nil, fmt.Errorf("service %s has no port %d", svc, f.Dst.Port())
	}
	o := t.failover
	budget, cancel := context.WithTimeout(ctx, o.Budget)
	defer cancel()
	tried := map[string]bool{}
	var last error
	for attempt := 1; attempt <= o.Attempts; attempt++ {
		e := t.balancer.Pick(svc, eps, func(e *balance.Endpoint) bool { return tried[e.Key] })
		if e == nil && attempt > 1 {
			// Every ready endpoint failed once: the next try may go to
			// any of them again.
			clear(tried)
			e = t.balancer.Pick(svc, eps, nil)
		}
		if e == nil {
			t.rec.ServiceConnect(svc, "no_endpoint")
			return nil, nil, fmt.Errorf("service %s port %d: %w", svc, f.ServicePort.Port, ErrNoEndpoint)
		}
		tried[e.Key] = true
		name(f, e)
		f.Attempts = attempt
		bc := t.balancer.Begin(svc, e)
		actx, acancel := context.WithTimeout(budget, min(o.Timeout, t.dialTimeout))
		c, err := t.dialTo(actx, p, f, e.Addr)
		acancel()
		if err == nil {
			bc.Connected()
			t.rec.ServiceConnect(svc, "ok")
			return c, bc.Done, nil
		}
		bc.Failed()
		last = fmt.Errorf("endpoint %s (attempt %d of %d): %w", e.Addr, attempt, o.Attempts, err)
		reason := retryReason(err)
		if reason == "" || ctx.Err() != nil || attempt == o.Attempts {
			break
		}
		t.rec.ServiceRetry(svc, reason)
		select {
		case <-time.After(o.backoff(attempt)):
		case <-budget.Done():
		}
		if budget.Err() != nil {
			last = fmt.Errorf("%w; connect budget %s used up", last, o.Budget)
			break
		}
	}
	t.rec.ServiceConnect(svc, "error")
	return nil, nil, fmt.Errorf("service %s: %w", svc, last)
}

// retryReason says why err is worth a try on another endpoint ("" when it
// is not: an overloaded node, a refusal by the destination's policy).
func retryReason(err error) string {
	var se *hbone.StatusError
	switch {
	case errors.Is(err, limits.ErrOverloaded):
		return ""
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
