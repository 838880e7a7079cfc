package balance

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Policy is how one Service's endpoints are chosen and guarded, from its
// TrafficPolicy (the zero value: peak-EWMA, nothing ejected, no limit).
type Policy struct {
	// Name is the TrafficPolicy's, for logs.
	Name string
	// Algorithm is a meshconfig.LB* constant; "" is peak-EWMA.
	Algorithm string
	// Outlier ejects endpoints that keep failing (nil: never).
	Outlier *meshconfig.Outlier
	// MaxRequestsPerEndpoint skips an endpoint with that many requests
	// open through this node (0: no limit).
	MaxRequestsPerEndpoint int
}

// Key is a request's affinity or hash key (Has false: none).
type Key struct {
	Value string
	Has   bool
}

// hashSeed is the node's seed of rendezvous hashing: stable for the
// process, so a key keeps its endpoint on this node.
var hashSeed = maphash.MakeSeed()

// PickFor chooses an endpoint of service for one request under p: among
// the ready endpoints skip does not exclude, not ejected (Outlier) and
// under the per-endpoint limit, the one key hashes to (rendezvous
// hashing: while it stays eligible the key's requests go there; when it
// goes, they move to the next one of the key's order and stay), else by
// p's algorithm. nil when none is eligible; full reports that some were
// left out only for their request limit (the caller answers 503).
func (b *Balancer) PickFor(service string, eps []Endpoint, skip func(*Endpoint) bool, p *Policy, key Key) (e *Endpoint, full bool) {
	if !key.Has && p.Outlier == nil && p.MaxRequestsPerEndpoint == 0 &&
		(p.Algorithm == "" || p.Algorithm == meshconfig.LBPeakEWMA) {
		// The default: Pick, which allocates nothing and reads the
		// stats of the two endpoints it samples only.
		return b.Pick(service, eps, skip), false
	}
	now := b.now()
	elig := make([]*Endpoint, 0, len(eps))
	for i := range eps {
		e := &eps[i]
		if !e.Ready || (skip != nil && skip(e)) {
			continue
		}
		s := b.Stats(service, e)
		if p.Outlier != nil {
			switch s.outlierState(now) {
			case ejectedNow:
				continue
			case onProbation:
				// Its ejection is over: one request probes it.
				if s.claimProbe(now) {
					return e, false
				}
				continue
			}
		}
		if p.MaxRequestsPerEndpoint > 0 && s.open.Load() >= int64(p.MaxRequestsPerEndpoint) {
			full = true
			continue
		}
		elig = append(elig, e)
	}
	if len(elig) == 0 {
		return nil, full
	}
	if key.Has {
		return rendezvous(elig, key.Value), false
	}
	switch p.Algorithm {
	case meshconfig.LBRoundRobin:
		return elig[b.counter(service).Add(1)%uint64(len(elig))], false
	case meshconfig.LBLeastRequest:
		a, c := twoOf(elig)
		if c != nil && b.Stats(service, c).open.Load() < b.Stats(service, a).open.Load() {
			return c, false
		}
		return a, false
	case meshconfig.LBConsistentHash:
		// No key on this request: any endpoint will do.
		return elig[rand.IntN(len(elig))], false
	}
	a, c := twoOf(elig)
	if c == nil {
		return a, false
	}
	return b.cheaper(service, a, c, now), false
}

// twoOf is two distinct endpoints of elig at random (c nil when it has
// one).
func twoOf(elig []*Endpoint) (a, c *Endpoint) {
	if len(elig) == 1 {
		return elig[0], nil
	}
	i := rand.IntN(len(elig))
	j := rand.IntN(len(elig) - 1)
	if j >= i {
		j++
	}
	return elig[i], elig[j]
}

// rendezvous is the endpoint of elig whose hash with key is highest.
func rendezvous(elig []*Endpoint, key string) *Endpoint {
	var best *Endpoint
	var top uint64
	for _, e := range elig {
		var h maphash.Hash
		h.SetSeed(hashSeed)
		h.WriteString(key)
		h.WriteByte(0)
		h.WriteString(e.Key)
		if v := h.Sum64(); best == nil || v > top {
			best, top = e, v
		}
	}
	return best
}

// counter is service's round-robin counter.
func (b *Balancer) counter(service string) *atomic.Uint64 {
	if c, ok := b.rr.Load(service); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := b.rr.LoadOrStore(service, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// outlier is an endpoint's ejection state.
type outlier struct {
	mu          sync.Mutex
	consecutive int       // failures in a row
	ejections   int       // ejections since it last recovered
	until       time.Time // ejected before it
	ejected     bool      // ejected, or on probation after it
	probeSince  time.Time // the probe request went out; zero: none out
}

// probeTimeout is how long a probe may be out before another request
// probes again (its request may have ended without a result).
const probeTimeout = 10 * time.Second

const (
	admitted = iota
	ejectedNow
	onProbation // ejection over, no probe out: the next request probes
)

func (s *Stats) outlierState(now time.Time) int {
	o := &s.outlier
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case !o.ejected:
		return admitted
	case now.Before(o.until):
		return ejectedNow
	case !o.probeSince.IsZero() && now.Sub(o.probeSince) < probeTimeout:
		return ejectedNow // its probe is out
	}
	return onProbation
}

// claimProbe makes the caller's request the probe; false if another
// request took it meanwhile.
func (s *Stats) claimProbe(now time.Time) bool {
	o := &s.outlier
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.ejected || now.Before(o.until) || (!o.probeSince.IsZero() && now.Sub(o.probeSince) < probeTimeout) {
		return false
	}
	o.probeSince = now
	return true
}

// Ejected reports whether the endpoint is ejected at now (on probation
// counts as ejected until its probe succeeds).
func (s *Stats) Ejected() bool {
	s.outlier.mu.Lock()
	defer s.outlier.mu.Unlock()
	return s.outlier.ejected
}

// Result observes how a request to endpoint e of service ended under p
// (failed: a 5xx answer or a failed connect) and ejects or restores it;
// true when this result ejected it.
func (b *Balancer) Result(service string, e *Endpoint, p *Policy, failed bool) bool {
	if p == nil || p.Outlier == nil {
		return false
	}
	cfg := p.Outlier
	s := b.Stats(service, e)
	now := b.now()
	o := &s.outlier
	o.mu.Lock()
	if !failed {
		o.consecutive = 0
		if o.ejected && !o.probeSince.IsZero() {
			o.ejected, o.probeSince, o.ejections = false, time.Time{}, 0
		}
		o.mu.Unlock()
		return false
	}
	o.consecutive++
	reject := o.ejected && !o.probeSince.IsZero() // the probe failed
	trip := !o.ejected && o.consecutive >= cfg.ConsecutiveFailures
	o.mu.Unlock()
	if !reject && !(trip && b.mayEject(service, cfg)) {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ejections++
	d := cfg.BaseEjection * time.Duration(o.ejections)
	if cfg.MaxEjection > 0 {
		d = min(d, cfg.MaxEjection)
	}
	o.ejected, o.probeSince, o.until, o.consecutive = true, time.Time{}, now.Add(d), 0
	b.ejections.Add(1)
	return true
}

// mayEject reports whether one more endpoint of service may be ejected
// under cfg's cap on the ejected share (at least one may always be, as
// Envoy does, unless the cap is 0).
func (b *Balancer) mayEject(service string, cfg *meshconfig.Outlier) bool {
	if cfg.MaxEjectedPercent <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	total, ejected := 0, 0
	for k, s := range b.stats {
		if k.service != service {
			continue
		}
		total++
		s.outlier.mu.Lock()
		if s.outlier.ejected {
			ejected++
		}
		s.outlier.mu.Unlock()
	}
	return ejected == 0 || (ejected+1)*100 <= total*cfg.MaxEjectedPercent
}

// Ejections is the number of ejections so far.
func (b *Balancer) Ejections() uint64 { return b.ejections.Load() }
