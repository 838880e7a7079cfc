package stream

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// Push is one version of a node's view, encoded, in the order to send it.
type Push struct {
	Version uint64
	Full    bool
	Msgs    []*configapi.Encoded
}

// Bytes is the encoded size of p.
func (p *Push) Bytes() int {
	n := 0
	for _, m := range p.Msgs {
		n += m.Len()
	}
	return n
}

// lazy is messages encoded once, by the first stream that needs them,
// outside the hub's lock; the others wait for that and share them.
type lazy struct {
	once sync.Once
	msgs []*configapi.ConfigResponse // dropped once encoded
	enc  []*configapi.Encoded
	err  error
	kind string
	stat func(kind string, n int)
}

func (l *lazy) encoded() ([]*configapi.Encoded, error) {
	l.once.Do(func() {
		for _, m := range l.msgs {
			e, err := configapi.Encode(m)
			if err != nil {
				l.err = fmt.Errorf("encode config: %w", err)
				return
			}
			l.enc = append(l.enc, e)
		}
		l.msgs = nil
		if l.stat != nil {
			l.stat(l.kind, len(l.enc))
		}
	})
	return l.enc, l.err
}

// deltaKey is where a node-independent delta goes from and to, and the
// version it carries.
type deltaKey struct{ from, to, version uint64 }

// SetEncodeStats makes the hub report every encoding it makes: kind
// (shared, node or delta) and the number of messages.
func (h *Hub) SetEncodeStats(f func(kind string, n int)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stats = f
}

// NextPush is Next, encoded for the wire (nil if nothing to send): a full
// view as the shared chunks of this revision and one chunk of node's own,
// a delta encoded once for every node it is the same for.
func (h *Hub) NextPush(node string, cur Cursor) (p *Push, next Cursor, wake <-chan struct{}, closed bool, err error) {
	h.mu.Lock()
	s, next, wake, closed := h.stepLocked(cur)
	var parts []*lazy
	switch s {
	case stepFull:
		own := h.ownLocked(node)
		h.stampLocked(node, own)
		p = &Push{Version: own.Version, Full: true}
		if !h.all { // nothing to share: the whole view in one message
			full := h.fullLocked(node)
			h.stampLocked(node, full)
			parts = []*lazy{h.lazyLocked("node", full)}
			break
		}
		parts = []*lazy{h.sharedLocked(), h.lazyLocked("node", own)}
	case stepDelta:
		r := h.deltaLocked(node, cur.rev)
		if r == nil {
			break
		}
		h.stampLocked(node, r)
		p = &Push{Version: r.Version}
		if !h.all || !generic(r) {
			parts = []*lazy{h.lazyLocked("delta", r)}
			break
		}
		k := deltaKey{from: cur.rev, to: h.rev, version: r.Version}
		l := h.deltas[k]
		if l == nil {
			l = h.lazyLocked("delta", r)
			h.deltas[k] = l
		}
		parts = []*lazy{l}
	}
	h.mu.Unlock()
	for _, l := range parts {
		msgs, err := l.encoded()
		if err != nil {
			return nil, cur, wake, closed, err
		}
		p.Msgs = append(p.Msgs, msgs...)
	}
	return p, next, wake, closed, nil
}

func (h *Hub) lazyLocked(kind string, msgs ...*configapi.ConfigResponse) *lazy {
	return &lazy{msgs: msgs, kind: kind, stat: h.stats}
}

// generic reports whether r holds nothing node-specific: no workload with
// its Authz (only its own node gets that) and no policy body.
func generic(r *configapi.ConfigResponse) bool {
	if len(r.Policies) > 0 {
		return false
	}
	for i := range r.Workloads {
		if r.Workloads[i].Authz != nil {
			return false
		}
	}
	return true
}

// sharedLocked returns the shared chunks of the full view at this
// revision: every workload without its Authz, then every service, each
// chunk with More set and the first with Full.
func (h *Hub) sharedLocked() *lazy {
	if h.shared != nil {
		return h.shared
	}
	var msgs []*configapi.ConfigResponse
	add := func() *configapi.ConfigResponse {
		r := &configapi.ConfigResponse{Full: len(msgs) == 0, More: true, TrustDomain: h.cur.td, TrustBundlePEM: h.cur.bundle}
		msgs = append(msgs, r)
		return r
	}
	var r *configapi.ConfigResponse
	for _, uid := range slices.Sorted(maps.Keys(h.cur.workloads)) {
		if r == nil || len(r.Workloads) == workloadsPerChunk {
			r = add()
		}
		w := forNode("", h.cur.workloads[uid])
		w.Authz = nil // every node's copy: the node's own chunk adds it
		r.Workloads = append(r.Workloads, w)
	}
	r = nil
	for _, k := range slices.Sorted(maps.Keys(h.cur.services)) {
		if r == nil || len(r.Services) == servicesPerChunk {
			r = add()
		}
		r.Services = append(r.Services, *h.cur.services[k])
	}
	if len(msgs) == 0 {
		add()
	}
	h.shared = h.lazyLocked("shared", msgs...)
	return h.shared
}

// ownLocked is the last chunk of node's full view: its workloads that
// carry Authz (again, now with it) and the policies they refer to.
func (h *Hub) ownLocked(node string) *configapi.ConfigResponse {
	r := &configapi.ConfigResponse{}
	for _, uid := range slices.Sorted(maps.Keys(h.cur.authz[node])) {
		if w := h.cur.workloads[uid]; h.visible(node, w) {
			r.Workloads = append(r.Workloads, forNode(node, w))
		}
	}
	r.Policies = h.cur.policyBodies(h.cur.refKeys(node))
	return r
}
