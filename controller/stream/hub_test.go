package stream

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/view"
)

func w(uid, node, ip string) meshconfig.Workload {
	return meshconfig.Workload{UID: uid, Name: uid, Namespace: "ns", ServiceAccount: "sa", Node: node,
		IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

func snap(ws ...meshconfig.Workload) *view.Snapshot {
	return &view.Snapshot{TrustDomain: "td", Workloads: ws,
		Services: []meshconfig.Service{{Name: "s", Namespace: "ns"}}}
}

func uids(ws []meshconfig.Workload) []string {
	var out []string
	for _, x := range ws {
		out = append(out, x.UID)
	}
	return out
}

// next asks for node's update and fails if there is none.
func next(t *testing.T, h *Hub, node string, cur Cursor) (*configapi.ConfigResponse, Cursor) {
	t.Helper()
	r, c, _, closed := h.Next(node, cur)
	if closed || r == nil {
		t.Fatalf("Next(%s): no update (closed=%v)", node, closed)
	}
	return r, c
}

func noNext(t *testing.T, h *Hub, node string, cur Cursor) Cursor {
	t.Helper()
	r, c, _, _ := h.Next(node, cur)
	if r != nil {
		t.Fatalf("Next(%s): unexpected update %+v", node, r)
	}
	return c
}

func TestHubSnapshotThenDeltas(t *testing.T) {
	h := NewHub(All)
	h.SetTrustBundle([]byte("bundle"))
	defer h.Subscribe("n1")()
	h.Update(snap(w("a", "n1", "10.0.0.1"), w("b", "n2", "10.0.0.2")))
	r, cur := next(t, h, "n1", Cursor{})
	if !r.Full || !slices.Equal(uids(r.Workloads), []string{"a", "b"}) || len(r.Services) != 1 ||
		string(r.TrustBundlePEM) != "bundle" || r.TrustDomain != "td" {
		t.Fatalf("first response = %+v, want full snapshot of a, b, one service, bundle", r)
	}
	v1 := r.Version

	// The same inputs again: no new version.
	h.Update(snap(w("a", "n1", "10.0.0.1"), w("b", "n2", "10.0.0.2")))
	cur = noNext(t, h, "n1", cur)

	// b changes, c appears, a goes away.
	h.Update(snap(w("b", "n2", "10.0.0.22"), w("c", "n1", "10.0.0.3")))
	r, cur = next(t, h, "n1", cur)
	if r.Full || r.Version <= v1 || !slices.Equal(uids(r.Workloads), []string{"b", "c"}) ||
		!slices.Equal(r.RemovedWorkloads, []string{"a"}) || len(r.Services) != 0 {
		t.Fatalf("delta = %+v, want upsert b c, remove a, newer than %d", r, v1)
	}
	// A slow stream that missed several changes gets one merged delta.
	v2 := r.Version
	h.Update(snap(w("b", "n2", "10.0.0.22"), w("c", "n1", "10.0.0.33")))
	h.Update(snap(w("b", "n2", "10.0.0.22"), w("c", "n1", "10.0.0.33"), w("d", "n2", "10.0.0.4")))
	h.Update(&view.Snapshot{TrustDomain: "td", Workloads: []meshconfig.Workload{w("b", "n2", "10.0.0.22"), w("c", "n1", "10.0.0.33"), w("d", "n2", "10.0.0.4")}})
	r, _ = next(t, h, "n1", cur)
	if r.Full || r.Version <= v2 || !slices.Equal(uids(r.Workloads), []string{"c", "d"}) ||
		len(r.RemovedWorkloads) != 0 || !slices.Equal(r.RemovedServices, []string{"ns/s"}) {
		t.Fatalf("merged delta = %+v, want upsert c d, remove service ns/s", r)
	}
	if got := h.Versions()["n1"]; got != r.Version {
		t.Errorf("Versions()[n1] = %d, want %d", got, r.Version)
	}
}

// TestHubPerNodeVersions: with a node-scoped visibility, a change only
// bumps the versions of the nodes that see it, and a workload moving out of
// a node's view is removed there.
func TestHubPerNodeVersions(t *testing.T) {
	own := func(node string, x *meshconfig.Workload) bool { return x.Node == node }
	h := NewHub(own)
	defer h.Subscribe("n1")()
	defer h.Subscribe("n2")()
	base := []meshconfig.Workload{w("a", "n1", "10.0.0.1"), w("b", "n2", "10.0.0.2")}
	h.Update(snap(base...))
	r1, c1 := next(t, h, "n1", Cursor{})
	r2, c2 := next(t, h, "n2", Cursor{})
	if !slices.Equal(uids(r1.Workloads), []string{"a"}) || !slices.Equal(uids(r2.Workloads), []string{"b"}) {
		t.Fatalf("snapshots n1=%v n2=%v, want [a] and [b]", uids(r1.Workloads), uids(r2.Workloads))
	}
	// Only b (on n2) changes: n1 has nothing new and keeps its version.
	h.Update(snap(w("a", "n1", "10.0.0.1"), w("b", "n2", "10.0.0.20")))
	c1 = noNext(t, h, "n1", c1)
	r2b, c2 := next(t, h, "n2", c2)
	if r2b.Version <= r2.Version || h.Versions()["n1"] != r1.Version {
		t.Fatalf("versions after a change on n2: n1 %d (was %d), n2 %d (was %d)", h.Versions()["n1"], r1.Version, r2b.Version, r2.Version)
	}
	// a moves from n1 to n2: removed on n1, upserted on n2.
	h.Update(snap(w("a", "n2", "10.0.0.1"), w("b", "n2", "10.0.0.20")))
	r, _ := next(t, h, "n1", c1)
	if !slices.Equal(r.RemovedWorkloads, []string{"a"}) || len(r.Workloads) != 0 {
		t.Errorf("n1 delta = %+v, want a removed", r)
	}
	r, _ = next(t, h, "n2", c2)
	if !slices.Equal(uids(r.Workloads), []string{"a"}) || len(r.RemovedWorkloads) != 0 {
		t.Errorf("n2 delta = %+v, want a upserted", r)
	}
}

// TestHubFallsBackToFull: a stream further behind than the log gets a full
// snapshot.
func TestHubFallsBackToFull(t *testing.T) {
	h := NewHub(All)
	h.logSize = 2
	defer h.Subscribe("n1")()
	h.Update(snap(w("a", "n1", "10.0.0.1")))
	_, cur := next(t, h, "n1", Cursor{})
	for i := range 4 {
		h.Update(snap(w("a", "n1", netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}).String())))
	}
	r, _ := next(t, h, "n1", cur)
	if !r.Full || !slices.Equal(uids(r.Workloads), []string{"a"}) {
		t.Fatalf("response after falling behind = %+v, want a full snapshot", r)
	}
}

func TestHubBundleChangeIsAVersion(t *testing.T) {
	h := NewHub(All)
	defer h.Subscribe("n1")()
	h.Update(snap())
	r0, cur := next(t, h, "n1", Cursor{})
	h.SetTrustBundle([]byte("new roots"))
	r, _ := next(t, h, "n1", cur)
	if r.Full || r.Version <= r0.Version || string(r.TrustBundlePEM) != "new roots" {
		t.Fatalf("after bundle change = %+v, want a delta with the new bundle", r)
	}
}

func TestHubCloseWakes(t *testing.T) {
	h := NewHub(All)
	defer h.Subscribe("n1")()
	h.Update(snap())
	_, cur, wake, _ := h.Next("n1", Cursor{})
	h.Close()
	select {
	case <-wake:
	default:
		t.Fatal("Close did not wake waiting streams")
	}
	if _, _, _, closed := h.Next("n1", cur); !closed {
		t.Fatal("Next after Close: closed = false")
	}
}

// BenchmarkHubUpdate: one pod changes among many, many nodes subscribed.
func BenchmarkHubUpdate(b *testing.B) {
	h := NewHub(All)
	var ws []meshconfig.Workload
	for i := range 5000 {
		ws = append(ws, w(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String(), "n", netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()))
	}
	for i := range 500 {
		defer h.Subscribe(netip.AddrFrom4([4]byte{1, 1, byte(i >> 8), byte(i)}).String())()
	}
	h.Update(snap(ws...))
	for i := 0; b.Loop(); i++ {
		next := slices.Clone(ws)
		next[i%len(ws)].Labels = map[string]string{"i": "x"}
		h.Update(snap(next...))
	}
}

func TestHubCloseBeforeReady(t *testing.T) {
	h := NewHub(All)
	h.Close()
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed by Close")
	}
	select {
	case <-h.Ready():
		t.Fatal("Ready closed without a view")
	default:
	}
}
