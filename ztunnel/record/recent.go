package record

import (
	"cmp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// DefaultRecentRequests is how many requests a node keeps for
// /debug/requests unless told otherwise (ztunnel --recent-requests).
const DefaultRecentRequests = 512

// The longest caller-chosen texts a kept request holds: longer ones are
// cut, so that the ring's memory stays bounded whatever the callers send
// (at most about 3 KiB an entry, 1.5 MiB for the default 512).
const (
	maxKeptPath = 1024
	maxKeptText = 256
)

// peer is one end of a kept request: the config's strings, shared, not
// copied.
type peer struct {
	namespace, pod, workload string
	id                       spiffe.ID
}

func peerOf(w *meshconfig.Workload, id spiffe.ID) peer {
	if w == nil {
		return peer{id: id}
	}
	return peer{namespace: w.Namespace, pod: w.Name, workload: cmp.Or(w.WorkloadName, w.Name), id: id}
}

// is reports whether the peer is the workload or the pod name in
// namespace ns.
func (p *peer) is(ns, name string) bool {
	return p.namespace == ns && (p.workload == name || p.pod == name)
}

// kept is one request as the ring holds it.
type kept struct {
	end         time.Time
	duration    time.Duration
	destination bool // the reporter: the destination's tunnel (else the source's)
	src, dst    peer
	// svcNamespace and svcName are the Service addressed, "" for none.
	svcNamespace, svcName         string
	protocol                      string
	method, authority, path       string
	status, attempts              int
	result                        string // "" for ok
	a2aMethod, mcpMethod, mcpTool string
	traceID, spanID               string
}

// keptOf is q of flow f, ended at end.
func keptOf(f *flow.Flow, q *Request, end time.Time) kept {
	k := kept{
		end: end, duration: q.Duration, destination: f.Direction == flow.Inbound,
		src: peerOf(f.SrcWorkload, f.SrcID), dst: peerOf(f.DstWorkload, f.DstID),
		protocol: f.AppProtocol, status: q.Status, attempts: q.Attempts,
		method: bounded(q.Method, maxKeptText), authority: bounded(q.Authority, maxKeptText),
		path: bounded(q.Path, maxKeptPath), a2aMethod: bounded(q.A2AMethod, maxKeptText),
		mcpMethod: bounded(q.MCPMethod, maxKeptText), mcpTool: bounded(q.MCPTool, maxKeptText),
		traceID: q.TraceID, spanID: q.SpanID,
	}
	if f.Service != nil {
		k.svcNamespace, k.svcName = f.Service.Namespace, f.Service.Name
	}
	if q.Err != nil {
		k.result = bounded(q.Err.Error(), maxKeptText)
	}
	return k
}

// bounded is s cut to at most n bytes (at a rune's start) and copied, so
// that the ring never holds on to a larger buffer s may be part of (a
// request's header block).
func bounded(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.Clone(s)
}

// ring keeps the last len(buf) requests, overwriting the oldest: its
// memory is allocated once.
type ring struct {
	mu   sync.Mutex
	buf  []kept // guarded by mu; fixed length
	next int    // guarded by mu; where the next request goes
	full bool   // guarded by mu; every entry of buf holds a request
}

func newRing(size int) *ring {
	if size <= 0 {
		return nil
	}
	return &ring{buf: make([]kept, size)}
}

// capacity is how many requests r keeps; nil keeps none.
func (r *ring) capacity() int {
	if r == nil {
		return 0
	}
	return len(r.buf)
}

// add keeps k, dropping the oldest when r is full.
func (r *ring) add(k *kept) {
	r.mu.Lock()
	r.buf[r.next] = *k
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// newest is up to limit (<= 0: all) requests whose source or destination
// is workload (namespace/name, "" for any), newest first.
func (r *ring) newest(workload string, limit int) []kept {
	if r == nil {
		return nil
	}
	ns, name, _ := strings.Cut(workload, "/")
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]kept, 0, limit)
	for i := range n {
		k := &r.buf[(r.next-1-i+len(r.buf))%len(r.buf)]
		if workload != "" && !k.src.is(ns, name) && !k.dst.is(ns, name) {
			continue
		}
		out = append(out, *k)
		if len(out) == limit {
			break
		}
	}
	return out
}

// RecentCapacity is how many requests the recorder keeps (0: none).
func (r *Recorder) RecentCapacity() int { return r.recent.capacity() }

// Recent is up to limit (<= 0: all kept) of the last requests recorded
// whose source or destination is workload (namespace/name of the
// workload or of the pod, "" for any), newest first.
func (r *Recorder) Recent(workload string, limit int) []debug.Request {
	ks := r.recent.newest(workload, limit)
	out := make([]debug.Request, len(ks))
	for i := range ks {
		out[i] = ks[i].request()
	}
	return out
}

// request is k on the wire.
func (k *kept) request() debug.Request {
	q := debug.Request{
		Time: k.end, Reporter: "source", Source: k.src.wire(), Destination: k.dst.wire(),
		Protocol: k.protocol, Method: k.method, Authority: k.authority, Path: k.path,
		Status: k.status, Result: cmp.Or(k.result, "ok"),
		DurationMillis: float64(k.duration.Microseconds()) / 1000, Attempts: k.attempts,
		A2AMethod: k.a2aMethod, MCPMethod: k.mcpMethod, MCPTool: k.mcpTool, TraceID: k.traceID, SpanID: k.spanID,
	}
	if k.destination {
		q.Reporter = "destination"
	}
	if k.svcName != "" {
		q.Service = k.svcNamespace + "/" + k.svcName
	}
	return q
}

func (p *peer) wire() debug.RequestPeer {
	w := debug.RequestPeer{Identity: IDString(p.id)}
	if p.namespace != "" {
		w.Workload, w.Pod = p.namespace+"/"+p.workload, p.namespace+"/"+p.pod
	}
	return w
}
