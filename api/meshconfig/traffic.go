package meshconfig

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// TrafficPolicy is how requests to a Service are balanced and guarded:
// the spec of the TrafficPolicy (agentmesh.io/v1alpha1) that targets it,
// with its defaults filled in by the controller. Everything but
// RateLimit runs in the source tunnel; RateLimit in the destination
// tunnel of the Service's endpoints.
type TrafficPolicy struct {
	// Name is the TrafficPolicy object, "namespace/name", for records.
	Name         string        `json:"name,omitempty"`
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	Affinity     *Affinity     `json:"affinity,omitempty"`
	Timeouts     *Timeouts     `json:"timeouts,omitempty"`
	RetryBudget  *RetryBudget  `json:"retryBudget,omitempty"`
	RetryBackoff *RetryBackoff `json:"retryBackoff,omitempty"`
	Breaker      *Breaker      `json:"breaker,omitempty"`
	Outlier      *Outlier      `json:"outlier,omitempty"`
	RateLimit    *RateLimit    `json:"rateLimit,omitempty"`
}

// Load balancing algorithms.
const (
	LBPeakEWMA       = "PeakEWMA" // power of two choices on peak-EWMA latency × open requests (the default)
	LBRoundRobin     = "RoundRobin"
	LBLeastRequest   = "LeastRequest" // power of two choices on open requests
	LBConsistentHash = "ConsistentHash"
)

// LoadBalancer chooses among a Service's ready endpoints.
type LoadBalancer struct {
	// Algorithm is one of the LB* constants; "" is LBPeakEWMA.
	Algorithm string `json:"algorithm,omitempty"`
	// Hash is the request's key for LBConsistentHash (required with it).
	Hash *HashKey `json:"hash,omitempty"`
}

// HashKey is what of a request its endpoint is chosen by: exactly one of
// Header (its value), Cookie (its value) or ContextID (the A2A
// params.message.contextId read from the body).
type HashKey struct {
	Header    string `json:"header,omitempty"`
	Cookie    string `json:"cookie,omitempty"`
	ContextID bool   `json:"contextId,omitempty"`
}

// Affinity pins the requests that carry the same key (a conversation: an
// Mcp-Session-Id, an A2A contextId, a cookie) to one endpoint, by
// consistent hash over the ready endpoints: while that endpoint is ready
// the key's requests go there; when it is gone they move to another and
// stay there. A request without the key is balanced as usual.
type Affinity struct {
	Key HashKey `json:"key"`
}

// Timeouts of a request to the Service, in the source tunnel (0: none).
// A route's own timeouts take precedence for its requests.
type Timeouts struct {
	// Connect bounds the connect to an endpoint (a new HBONE stream).
	Connect time.Duration `json:"connect,omitempty"`
	// FirstByte bounds the wait for the response's headers, from the
	// request's start (504).
	FirstByte time.Duration `json:"firstByte,omitempty"`
	// Idle ends a response (or a streamed request) that moved no byte
	// for this long.
	Idle time.Duration `json:"idle,omitempty"`
	// Total bounds the whole request, response included.
	Total time.Duration `json:"total,omitempty"`
}

// RetryBudget bounds retries to Ratio of the requests of the last ten
// seconds plus MinPerSecond.
type RetryBudget struct {
	Ratio        float64 `json:"ratio"`
	MinPerSecond int     `json:"minPerSecond"`
}

// RetryBackoff is the wait before a retry of a request for its status:
// Base before the first, doubled with each retry up to Max, with jitter
// (0: the data plane's defaults). A route's retry backoff takes
// precedence over Base.
type RetryBackoff struct {
	Base time.Duration `json:"base,omitempty"`
	Max  time.Duration `json:"max,omitempty"`
}

// Breaker limits what one node's source tunnel sends the Service at
// once (0: no limit); a request over a limit gets 503 at once, with the
// Agentmesh-Error header naming the limit.
type Breaker struct {
	// MaxConnections per endpoint: HBONE streams open to it (a request
	// that needs a new one while at the limit overflows).
	MaxConnections int `json:"maxConnections,omitempty"`
	// MaxPendingRequests of the Service: requests waiting for a
	// connection to an endpoint.
	MaxPendingRequests int `json:"maxPendingRequests,omitempty"`
	// MaxRequests in flight, of the Service and per endpoint.
	MaxRequests            int `json:"maxRequests,omitempty"`
	MaxRequestsPerEndpoint int `json:"maxRequestsPerEndpoint,omitempty"`
}

// Outlier ejects an endpoint that keeps failing: after
// ConsecutiveFailures 5xx answers or failed connects in a row, it gets no
// requests for BaseEjection × the times it was ejected (at most
// MaxEjection); then one request probes it, and its success ends the
// ejection, its failure ejects it again. At most MaxEjectedPercent of the
// Service's endpoints are ejected at once.
type Outlier struct {
	ConsecutiveFailures int           `json:"consecutiveFailures"`
	BaseEjection        time.Duration `json:"baseEjection"`
	MaxEjection         time.Duration `json:"maxEjection,omitempty"`
	MaxEjectedPercent   int           `json:"maxEjectedPercent"`
}

// RateLimit is enforced by the destination tunnel of each endpoint: token
// buckets refilled at a rate per second up to a burst; a request that
// finds its bucket empty gets 429 with Retry-After. Zero rates: no limit.
type RateLimit struct {
	// PerEndpoint: one bucket per endpoint (the destination agent).
	PerEndpoint *Bucket `json:"perEndpoint,omitempty"`
	// PerSource: one bucket per endpoint and source identity.
	PerSource *Bucket `json:"perSource,omitempty"`
	// Tools: one bucket per endpoint and MCP tool named (tools/call).
	Tools map[string]Bucket `json:"tools,omitempty"`
}

// Bucket is a token bucket: Rate tokens a second, at most Burst.
type Bucket struct {
	Rate  float64 `json:"rate"`
	Burst int     `json:"burst"`
}

// validate checks tp (the controller fills it from a validated CRD; a
// config from elsewhere may carry anything).
func (tp *TrafficPolicy) validate() error {
	var errs []error
	if lb := tp.LoadBalancer; lb != nil {
		switch lb.Algorithm {
		case "", LBPeakEWMA, LBRoundRobin, LBLeastRequest:
		case LBConsistentHash:
			if lb.Hash == nil {
				errs = append(errs, errors.New("loadBalancer: ConsistentHash needs a hash key"))
			}
		default:
			errs = append(errs, fmt.Errorf("loadBalancer: unknown algorithm %q", lb.Algorithm))
		}
		if lb.Hash != nil {
			errs = append(errs, lb.Hash.validate("loadBalancer.hash"))
		}
	}
	if a := tp.Affinity; a != nil {
		errs = append(errs, a.Key.validate("affinity.key"))
	}
	if t := tp.Timeouts; t != nil && (t.Connect < 0 || t.FirstByte < 0 || t.Idle < 0 || t.Total < 0) {
		errs = append(errs, errors.New("timeouts: negative duration"))
	}
	if b := tp.RetryBudget; b != nil && (!finite(b.Ratio) || b.MinPerSecond < 0) {
		errs = append(errs, errors.New("retryBudget: want a finite ratio >= 0 and a minimum >= 0"))
	}
	if b := tp.RetryBackoff; b != nil && (b.Base < 0 || b.Max < 0 || (b.Max > 0 && b.Max < b.Base)) {
		errs = append(errs, errors.New("retryBackoff: want 0 <= base <= max (max 0: none given)"))
	}
	if b := tp.Breaker; b != nil && (b.MaxConnections < 0 || b.MaxPendingRequests < 0 || b.MaxRequests < 0 || b.MaxRequestsPerEndpoint < 0) {
		errs = append(errs, errors.New("breaker: negative limit"))
	}
	if o := tp.Outlier; o != nil && (o.ConsecutiveFailures < 1 || o.BaseEjection <= 0 || o.MaxEjection < 0 || o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100) {
		errs = append(errs, errors.New("outlier: want consecutiveFailures >= 1, baseEjection > 0, maxEjectedPercent 0-100"))
	}
	if r := tp.RateLimit; r != nil {
		for name, b := range map[string]*Bucket{"perEndpoint": r.PerEndpoint, "perSource": r.PerSource} {
			if b != nil && (!finite(b.Rate) || b.Burst < 0) {
				errs = append(errs, fmt.Errorf("rateLimit.%s: want a finite rate >= 0 and a burst >= 0", name))
			}
		}
		for tool, b := range r.Tools {
			if tool == "" || !finite(b.Rate) || b.Burst < 0 {
				errs = append(errs, fmt.Errorf("rateLimit.tools[%q]: want a tool name, rate and burst >= 0", tool))
			}
		}
	}
	return errors.Join(errs...)
}

func (k *HashKey) validate(field string) error {
	n := 0
	for _, set := range []bool{k.Header != "", k.Cookie != "", k.ContextID} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s: want exactly one of header, cookie, contextId", field)
	}
	return nil
}

// finite reports whether v is a number >= 0 (not NaN, not infinite).
func finite(v float64) bool { return v >= 0 && !math.IsInf(v, 1) }
