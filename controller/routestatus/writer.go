// Package routestatus writes what the mesh made of each HTTPRoute and
// GRPCRoute whose parent is a Service: the status.parents entries of
// controllerName view.GatewayControllerName, one per Service parentRef,
// with the conditions Accepted and ResolvedRefs. Entries of other
// controllers are left as they are. Only the leader writes; a write is
// skipped when the cache already shows it, so a steady state makes no
// request.
//
// status.parents is an atomic list (server-side apply would own all of
// it), so a write is a read-modify-write of the status subresource: get
// the route, replace the mesh's entries, update with the resourceVersion
// read; on a conflict (someone else wrote in between) read again.
package routestatus

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/agentmesh/agentmesh/controller/statusloop"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/controller/view"
)

// FieldManager is the field manager of the status writes.
const FieldManager = "agentmesh-controller"

// Options configure a Writer.
type Options struct {
	// Client gets routes and updates their status subresource.
	Client dynamic.Interface
	// Current returns the cached route kind (view.KindHTTPRoute or
	// view.KindGRPCRoute) namespace/name: its metadata and status parents;
	// ok false when the cache has none.
	Current func(kind, namespace, name string) (meta metav1.ObjectMeta, parents []gwv1.RouteParentStatus, ok bool)
	Logger  *slog.Logger
}

// Writer brings route status in line with the latest view while this
// replica leads (SetLeader). SetStatus, Update, Kick and SetLeader are
// safe for concurrent use; Run owns the rest.
type Writer struct {
	o    Options
	loop *statusloop.Loop // leadership and wake-ups

	mu     sync.Mutex
	routes []view.RouteState // guarded by mu: the latest
	set    bool              // guarded by mu: routes was handed over

	written map[string]write // Run only: route UID -> our last write
}

// write is a status write the cache may not show yet.
type write struct {
	parents []gwv1.RouteParentStatus
	// staleRV is the cached resourceVersion the write was based on: while
	// the cache still has it, the cache is behind the write.
	staleRV string
}

// New returns a Writer; Run starts it.
func New(o Options) *Writer {
	return &Writer{o: o, loop: statusloop.New(), written: map[string]write{}}
}

// Update hands over a new snapshot; it never blocks.
func (w *Writer) Update(s *view.Snapshot) { w.SetStatus(view.Status{Routes: s.Routes}) }

// SetStatus hands over the view's new route states; it never blocks. The
// states are not modified.
func (w *Writer) SetStatus(st view.Status) {
	w.mu.Lock()
	w.routes, w.set = st.Routes, true
	w.mu.Unlock()
	w.Kick()
}

// Kick asks for a sync.
func (w *Writer) Kick() { w.loop.Kick() }

// SetLeader tells the writer whether this replica leads (a new Writer does
// not): only the leader writes. Becoming leader starts a sync, which
// catches up with what the last leader left. It never blocks.
func (w *Writer) SetLeader(leads bool) { w.loop.SetLeader(leads) }

// Run syncs after every Kick while leader, retrying failures with backoff,
// until ctx is done.
func (w *Writer) Run(ctx context.Context) {
	w.loop.Run(ctx, w.sync, w.o.Logger, "write route status")
}

func (w *Writer) sync(ctx context.Context) error {
	w.mu.Lock()
	routes, set := w.routes, w.set
	w.mu.Unlock()
	if !set {
		return nil
	}
	var errs []error
	live := make(map[string]bool, len(routes))
	for i := range routes {
		live[routes[i].UID] = true
		if err := w.syncRoute(ctx, &routes[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for uid := range w.written {
		if !live[uid] {
			delete(w.written, uid)
		}
	}
	return errors.Join(errs...)
}

// syncRoute writes rs's entries unless the cache already has them (or is
// only behind our own write of them).
func (w *Writer) syncRoute(ctx context.Context, rs *view.RouteState) error {
	meta, parents, ok := w.o.Current(rs.Kind, rs.Namespace, rs.Name)
	if !ok || string(meta.UID) != rs.UID || meta.Generation != rs.Generation {
		return nil // deleted, replaced or changed: a later view has the news
	}
	if sameParents(ours(parents), rs.Parents) {
		delete(w.written, rs.UID)
		return nil
	}
	if last, ok := w.written[rs.UID]; ok && sameParents(last.parents, rs.Parents) && meta.ResourceVersion == last.staleRV {
		return nil
	}
	wrote, err := update(ctx, w.o.Client, rs)
	if err != nil {
		return err
	}
	w.written[rs.UID] = write{parents: rs.Parents, staleRV: meta.ResourceVersion}
	if wrote {
		w.o.Logger.Info("route status", "route", rs.Key(), "parents", summary(rs.Parents))
	}
	return nil
}

// ours are the entries of parents the mesh wrote.
func ours(parents []gwv1.RouteParentStatus) []gwv1.RouteParentStatus {
	var out []gwv1.RouteParentStatus
	for _, p := range parents {
		if p.ControllerName == view.GatewayControllerName {
			out = append(out, p)
		}
	}
	return out
}

// summary describes entries for the log: each parent's Accepted and
// ResolvedRefs reasons.
func summary(ps []gwv1.RouteParentStatus) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		s := string(p.ParentRef.Name)
		for _, c := range p.Conditions {
			s += " " + c.Type + "=" + string(c.Status) + "/" + c.Reason
		}
		out = append(out, s)
	}
	return out
}
