package pipeline

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"golang.org/x/time/rate"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// Rate limits are the destination tunnel's part of a TrafficPolicy: token
// buckets (golang.org/x/time/rate) per endpoint, per endpoint and source
// identity, and per endpoint and MCP tool, of every Service with limits
// the destination pod backs on the port a request came to. A request
// that finds a bucket empty gets 429 with Retry-After (a JSON-RPC call: a
// JSON-RPC error with its id), and takes no token from the others.

// limiters holds the buckets, by key; idle ones are dropped when there
// are many.
type limiters struct {
	mu sync.Mutex
	m  map[string]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	used time.Time
}

// maxLimiters bounds the buckets kept (per source identity they grow with
// the callers): past it, those idle for a minute are dropped, a full
// bucket being what a new one is anyway.
const maxLimiters = 1 << 16

func (ls *limiters) get(key string, b meshconfig.Bucket, now time.Time) *rate.Limiter {
	key = fmt.Sprintf("%s|%g|%d", key, b.Rate, b.Burst) // a new config's rate is a new bucket
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if e, ok := ls.m[key]; ok {
		e.used = now
		return e.lim
	}
	if ls.m == nil {
		ls.m = map[string]*limiterEntry{}
	}
	if len(ls.m) >= maxLimiters {
		for k, e := range ls.m {
			if now.Sub(e.used) > time.Minute {
				delete(ls.m, k)
			}
		}
	}
	burst := b.Burst
	if burst < 1 {
		burst = max(1, int(math.Ceil(b.Rate)))
	}
	e := &limiterEntry{lim: rate.NewLimiter(rate.Limit(b.Rate), burst), used: now}
	ls.m[key] = e
	return e.lim
}

// rateLimit takes a token from every bucket that applies to a request of
// ac carrying calls; false (after answering 429) when one is empty.
func (pl *Pipeline) rateLimit(w http.ResponseWriter, ac *authorize.Conn, calls []policy.Call, batch bool, ids []jsontext.Value) bool {
	svcs := pl.Index().RateLimited(ac.Pod.UID, ac.Dst.Port())
	if len(svcs) == 0 {
		return true
	}
	now := time.Now()
	src := ac.Policy.Identity.String()
	if ac.Policy.Identity.IsZero() {
		src = "addr:" + ac.Src.Addr().String()
	}
	var taken []*rate.Reservation
	var wait time.Duration
	var limited *meshconfig.Service
	take := func(s *meshconfig.Service, key string, b meshconfig.Bucket) {
		if b.Rate <= 0 && b.Burst <= 0 {
			return
		}
		r := pl.limiters.get(s.Key()+"|"+ac.Pod.UID+"|"+key, b, now).ReserveN(now, 1)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			if !r.OK() {
				d = time.Second
			}
			if d > wait {
				wait, limited = d, s
			}
			return
		}
		taken = append(taken, r)
	}
	for _, s := range svcs {
		rl := s.Traffic.RateLimit
		if rl.PerEndpoint != nil {
			take(s, "endpoint", *rl.PerEndpoint)
		}
		if rl.PerSource != nil {
			take(s, "source|"+src, *rl.PerSource)
		}
		for _, c := range calls {
			if c.Method != policy.MCPToolsCall {
				continue
			}
			if b, ok := rl.Tools[c.Tool]; ok {
				take(s, "tool|"+c.Tool, b)
			}
		}
	}
	if limited == nil {
		return true
	}
	for _, r := range taken {
		r.CancelAt(now)
	}
	pl.Record.TrafficEvent(limited.Key(), record.EventRateLimited)
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	w.Header().Set("Agentmesh-Error", "rate_limited")
	if len(calls) > 0 {
		jsonRPCError(w, http.StatusTooManyRequests, batch, ids, -32029, "Rate limit exceeded")
		return false
	}
	http.Error(w, "agentmesh: too many requests", http.StatusTooManyRequests)
	return false
}
