package configclient

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

// view mirrors the controller's view of this node on one stream. It
// follows every version, accepted or not, because the next delta is
// relative to what the controller sent.
//
// It also remembers what changed since the last accepted config (the dirty
// sets), so that a delta costs in proportion to what it changes: the next
// config is the accepted one with the changed entries replaced, checked
// for what they could break (required fields, policy references, address
// clashes with the rest). A full response, or anything the quick check
// refuses, goes the whole way: the config is rebuilt and validated from the
// mirror, as the first one was.
type view struct {
	full   bool
	td     string
	bundle []byte
	// workloads point into responses and configs, never modified: a
	// workload without policy refs shares the config's element (Validate
	// only rewrites the Authz of workloads that refer to policies).
	workloads map[string]*meshconfig.Workload
	services  map[string]meshconfig.Service
	policies  map[string]policy.Policy // by namespace/name
	refs      map[string]int           // policy key -> workloads of the mirror referring to it

	// Since the last accepted config:
	rebuild        bool            // a full response arrived
	trust          bool            // trust domain or bundle changed
	dirtyW, dirtyS map[string]bool // workloads and services upserted with new content or removed
	dirtyP         map[string]bool // policies whose body changed, appeared or went
	chunkErr       error           // a chunk of the version being received failed to merge
	// owners indexes the addresses of the accepted config: address -> uid
	// (nil until a patch needs it).
	owners map[netip.Addr]string
	// fullChunks are the chunks of a full version being received;
	// fullCfg is the config of the last full version while nothing was
	// merged after it (config returns it instead of sorting the mirror).
	fullChunks []*configapi.ConfigResponse
	fullCfg    *meshconfig.Config
}

func newView() *view {
	v := &view{workloads: map[string]*meshconfig.Workload{}, services: map[string]meshconfig.Service{},
		policies: map[string]policy.Policy{}, refs: map[string]int{}}
	v.accepted()
	return v
}

// accepted forgets what changed: the config built last is in force.
func (v *view) accepted() {
	v.rebuild, v.trust = false, false
	v.dirtyW, v.dirtyS, v.dirtyP = map[string]bool{}, map[string]bool{}, map[string]bool{}
}

// merge applies one response to the mirror. The chunks of a full version
// are kept until its last one and then taken in one go (mergeFull).
func (v *view) merge(r *configapi.ConfigResponse) error {
	if r.Full || v.fullChunks != nil {
		if r.Full {
			v.fullChunks = v.fullChunks[:0]
		}
		v.fullChunks = append(v.fullChunks, r)
		if !r.More {
			v.mergeFull(v.fullChunks)
			v.fullChunks = nil
		}
		return nil
	}
	if !v.full {
		return errNoSnapshot
	}
	v.fullCfg = nil
	if v.td != r.TrustDomain || !slices.Equal(v.bundle, r.TrustBundlePEM) {
		v.trust = true
	}
	v.td, v.bundle = r.TrustDomain, r.TrustBundlePEM
	touched := map[string]bool{} // policies whose reference count changed
	for _, uid := range r.RemovedWorkloads {
		if old, ok := v.workloads[uid]; ok {
			v.count(old, -1, touched)
			delete(v.workloads, uid)
			v.dirtyW[uid] = true
		}
	}
	for i := range r.Workloads {
		w := &r.Workloads[i]
		old, ok := v.workloads[w.UID]
		if ok && reflect.DeepEqual(old, w) {
			continue
		}
		if ok {
			v.count(old, -1, touched)
		}
		v.count(w, +1, touched)
		v.workloads[w.UID] = w
		v.dirtyW[w.UID] = true
	}
	for _, k := range r.RemovedServices {
		if _, ok := v.services[k]; ok {
			delete(v.services, k)
			v.dirtyS[k] = true
		}
	}
	for _, s := range r.Services {
		if old, ok := v.services[s.Key()]; !ok || !reflect.DeepEqual(old, s) {
			v.services[s.Key()] = s
			v.dirtyS[s.Key()] = true
		}
	}
	for _, p := range r.Policies {
		if old, ok := v.policies[p.Key()]; !ok || !reflect.DeepEqual(old, p) {
			v.policies[p.Key()] = p
			v.dirtyP[p.Key()] = true
		}
		touched[p.Key()] = true
	}
	v.dropUnreferenced(touched)
	return nil
}

// mergeFull replaces the mirror with a full version: rs are its chunks in
// order, a later upsert replacing an earlier one. The controller sends
// the workloads and services sorted, so the config comes out sorted
// without sorting the whole view; the mirror's maps are made at their
// size.
func (v *view) mergeFull(rs []*configapi.ConfigResponse) {
	last := rs[len(rs)-1]
	v.full, v.rebuild = true, true
	if v.td != last.TrustDomain || !slices.Equal(v.bundle, last.TrustBundlePEM) {
		v.trust = true
	}
	v.td, v.bundle = last.TrustDomain, last.TrustBundlePEM
	nw, ns := 0, 0
	for _, r := range rs {
		nw, ns = nw+len(r.Workloads), ns+len(r.Services)
	}
	ws, ss := make([]meshconfig.Workload, 0, nw), make([]meshconfig.Service, 0, ns)
	for _, r := range rs {
		ws = upsertSorted(ws, r.Workloads, func(w *meshconfig.Workload) string { return w.UID })
		ss = upsertSorted(ss, r.Services, (*meshconfig.Service).Key)
	}
	v.workloads = make(map[string]*meshconfig.Workload, len(ws))
	clear(v.refs)
	touched := map[string]bool{}
	for i := range ws {
		w := &ws[i]
		if w.Authz != nil && len(w.Authz.PolicyRefs) > 0 {
			raw := *w // ws becomes the config, whose refs Validate resolves
			w = &raw
		}
		v.workloads[w.UID] = w
		v.count(w, +1, touched)
	}
	v.services = make(map[string]meshconfig.Service, len(ss))
	for _, s := range ss {
		v.services[s.Key()] = s
	}
	clear(v.policies)
	for _, r := range rs {
		for _, p := range r.Policies {
			v.policies[p.Key()] = p
			touched[p.Key()] = true
		}
	}
	v.dropUnreferenced(touched)
	if len(ws) == 0 {
		ws = nil // as config has it
	}
	if len(ss) == 0 {
		ss = nil
	}
	v.fullCfg = &meshconfig.Config{TrustDomain: v.td, Workloads: ws, Services: ss, Policies: v.policyList()}
}

// upsertSorted adds add to out (sorted by key, without duplicates), an
// entry of add replacing out's with its key. It stays linear while add
// comes in order after out or replaces entries, as the controller's chunks
// do; otherwise it sorts.
func upsertSorted[T any](out, add []T, key func(*T) string) []T {
	sorted := true
	for i := range add {
		k := key(&add[i])
		n := len(out)
		if n == 0 || key(&out[n-1]) < k {
			out = append(out, add[i])
			continue
		}
		if j, found := slices.BinarySearchFunc(out, k, func(x T, k string) int { return cmp.Compare(key(&x), k) }); found {
			out[j] = add[i]
			continue
		}
		out = append(out, add[i])
		sorted = false
	}
	if sorted {
		return out
	}
	slices.SortStableFunc(out, func(a, b T) int { return cmp.Compare(key(&a), key(&b)) })
	// Keep the last of equal keys (the later upsert).
	var dedup []T
	for i := range out {
		if i+1 < len(out) && key(&out[i]) == key(&out[i+1]) {
			continue
		}
		dedup = append(dedup, out[i])
	}
	return dedup
}

// count adds d to the reference count of every policy w refers to and
// notes them in touched.
func (v *view) count(w *meshconfig.Workload, d int, touched map[string]bool) {
	if w.Authz == nil {
		return
	}
	for _, ref := range w.Authz.PolicyRefs {
		v.refs[ref] += d
		touched[ref] = true
	}
}

// dropUnreferenced forgets the policies among keys that no workload refers
// to any more (the controller sends a policy again with any workload that
// comes to refer to it).
func (v *view) dropUnreferenced(keys map[string]bool) {
	for k := range keys {
		if v.refs[k] > 0 {
			continue
		}
		delete(v.refs, k)
		if _, ok := v.policies[k]; ok {
			delete(v.policies, k)
			v.dirtyP[k] = true
		}
	}
}

// changed reports whether anything differs from the accepted config.
func (v *view) changed() bool {
	return v.rebuild || v.trust || len(v.dirtyW)+len(v.dirtyS)+len(v.dirtyP) > 0
}

// config builds the Config of the mirror, sorted.
func (v *view) config() *meshconfig.Config {
	if c := v.fullCfg; c != nil {
		// Validate resolves the policies in the workloads it is given:
		// the next build (if this one is refused) starts from the maps.
		v.fullCfg = nil
		return c
	}
	return v.mapConfig()
}

// mapConfig builds the Config of the mirror's maps, sorted.
func (v *view) mapConfig() *meshconfig.Config {
	c := &meshconfig.Config{TrustDomain: v.td}
	for _, uid := range slices.Sorted(maps.Keys(v.workloads)) {
		c.Workloads = append(c.Workloads, *v.workloads[uid])
	}
	for _, k := range slices.Sorted(maps.Keys(v.services)) {
		c.Services = append(c.Services, v.services[k])
	}
	c.Policies = v.policyList()
	return c
}

func (v *view) policyList() []policy.Policy {
	var out []policy.Policy
	for _, k := range slices.Sorted(maps.Keys(v.policies)) {
		out = append(out, v.policies[k])
	}
	return out
}

// next is a validated config and what makes it the accepted one.
type next struct {
	cfg *meshconfig.Config
	// commit updates the view's address index to cfg: call it once cfg is
	// accepted.
	commit func()
}

// build returns the next config: the accepted one (prev) patched with
// what changed, or rebuilt from the mirror when there is no accepted one,
// a full response arrived, or the patch fails its check (then the full
// validation decides, and its error is the one reported).
func (v *view) build(prev *meshconfig.Config) (*next, error) {
	if prev != nil && !v.rebuild {
		if n, ok := v.patch(prev); ok {
			return n, nil
		}
	}
	cfg := v.config()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	return &next{cfg: cfg, commit: func() { v.owners = nil }}, nil // indexed when a patch first needs it
}

// ownersOf indexes the addresses of cfg: address -> uid.
func ownersOf(cfg *meshconfig.Config) map[netip.Addr]string {
	owners := make(map[netip.Addr]string, len(cfg.Workloads))
	for i := range cfg.Workloads {
		for _, ip := range cfg.Workloads[i].IPs {
			owners[ip.Unmap()] = cfg.Workloads[i].UID
		}
	}
	return owners
}

// patch is prev with the dirty entries replaced; ok is false when they do
// not pass Validate's checks on their own or clash with the rest. What did
// not change is shared with prev (configs are never modified).
func (v *view) patch(prev *meshconfig.Config) (*next, bool) {
	td := cmp.Or(v.td, mesh.DefaultTrustDomain)
	cfg := &meshconfig.Config{TrustDomain: td, Workloads: prev.Workloads, Services: prev.Services, Policies: v.policyList()}
	redo := maps.Clone(v.dirtyW) // workloads to take from the mirror again
	if len(v.dirtyP) > 0 {
		for uid, w := range v.workloads {
			if w.Authz != nil && slices.ContainsFunc(w.Authz.PolicyRefs, func(k string) bool { return v.dirtyP[k] }) {
				redo[uid] = true
			}
		}
	}
	commit := func() {}
	if len(redo) > 0 {
		// The changed workloads, checked (fields, duplicates, references)
		// and resolved by Validate on their own.
		part := &meshconfig.Config{TrustDomain: td, Policies: cfg.Policies}
		for _, uid := range slices.Sorted(maps.Keys(redo)) {
			if w, ok := v.workloads[uid]; ok {
				part.Workloads = append(part.Workloads, *w)
			}
		}
		if part.Validate() != nil {
			return nil, false
		}
		if v.owners == nil {
			v.owners = ownersOf(prev)
		}
		for i := range part.Workloads {
			for _, ip := range part.Workloads[i].IPs {
				if o, ok := v.owners[ip.Unmap()]; ok && o != part.Workloads[i].UID && !redo[o] {
					return nil, false
				}
			}
		}
		cfg.Workloads = mergeSorted(prev.Workloads, part.Workloads, redo, func(w *meshconfig.Workload) string { return w.UID })
		commit = func() {
			maps.DeleteFunc(v.owners, func(_ netip.Addr, uid string) bool { return redo[uid] })
			for i := range part.Workloads {
				for _, ip := range part.Workloads[i].IPs {
					v.owners[ip.Unmap()] = part.Workloads[i].UID
				}
			}
		}
	}
	if len(v.dirtyS) > 0 {
		var svcs []meshconfig.Service
		for _, k := range slices.Sorted(maps.Keys(v.dirtyS)) {
			if s, ok := v.services[k]; ok {
				svcs = append(svcs, s)
			}
		}
		cfg.Services = mergeSorted(prev.Services, svcs, v.dirtyS, (*meshconfig.Service).Key)
	}
	return &next{cfg: cfg, commit: commit}, true
}

// mergeSorted returns old (sorted by key) without the entries whose key is
// in drop, merged with add (sorted by key, keys in drop).
func mergeSorted[T any](old, add []T, drop map[string]bool, key func(*T) string) []T {
	out := make([]T, 0, len(old)+len(add))
	j := 0
	for i := range old {
		k := key(&old[i])
		for j < len(add) && key(&add[j]) < k {
			out = append(out, add[j])
			j++
		}
		if !drop[k] {
			out = append(out, old[i])
		}
	}
	if out = append(out, add[j:]...); len(out) == 0 {
		return nil // as the full build has it
	}
	return out
}

// apply merges r and, after the last chunk of a version, hands the result
// to the callbacks. An error means the version is refused; the previous
// config stays in force.
func (c *Client) apply(v *view, r *configapi.ConfigResponse) error {
	if err := v.merge(r); err != nil {
		v.chunkErr = err
	}
	if r.More {
		return nil
	}
	if err := v.chunkErr; err != nil {
		v.chunkErr = nil
		return err
	}
	if !v.changed() && c.accepted != nil {
		return nil
	}
	n, err := v.build(c.accepted)
	if err != nil {
		return err
	}
	if v.trust || c.bundle.Load() == nil {
		pool, err := parseBundle(v.bundle)
		if err != nil {
			return err
		}
		if old := c.bundle.Load(); old == nil || !old.Equal(pool) {
			c.bundle.Store(pool)
			if c.o.OnTrustBundle != nil {
				c.o.OnTrustBundle(pool)
			}
		}
	}
	same := c.accepted != nil && v.rebuild && reflect.DeepEqual(c.accepted, n.cfg) // e.g. the snapshot after a reconnect
	if !same && c.o.OnConfig != nil {
		if err := c.o.OnConfig(n.cfg); err != nil {
			return err
		}
	}
	c.accepted = n.cfg
	n.commit()
	v.accepted()
	if !same {
		c.log.Info("applied config", "version", r.Version, "full", r.Full,
			"workloads", len(n.cfg.Workloads), "services", len(n.cfg.Services), "policies", len(n.cfg.Policies))
	}
	return nil
}

func parseBundle(pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if len(pem) == 0 || !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("trust bundle has no certificates")
	}
	return pool, nil
}
