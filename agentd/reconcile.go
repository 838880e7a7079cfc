package agentd

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// reconciler makes the datapath and ztunnel match the enrolled workloads of
// one node. It is not safe for concurrent use: one loop owns it.
type reconciler struct {
	node string
	dp   Datapath
	ho   Handoff
	log  *slog.Logger
	// cookieOf returns the cookie of an open netns (netns.Cookie; tests
	// may replace it).
	cookieOf func(f *os.File) (uint64, error)
	// finder finds a pod's netns in Kubernetes mode; nil in standalone
	// mode, where Workload.Netns names it.
	finder NetnsFinder
	// skipped are pods the finder found in the host network namespace;
	// they can never be enrolled (hostNetwork is immutable), so they are
	// logged once and not retried.
	skipped map[string]bool

	pods map[string]*enrolledPod // by workload UID
	// orphans are cookies the datapath had enrolled when agentd started
	// that no workload has claimed yet. They are unenrolled only after a
	// sync in which every wanted pod succeeded, so a restart never drops
	// the capture of a pod that is still in the config.
	orphans map[uint64]bool
}

// enrolledPod is a workload as last applied, and its netns cookie.
type enrolledPod struct {
	w      meshconfig.Workload
	cookie uint64
	gated  bool // captured at its CNI ADD (gate.go)
}

// newReconciler starts from what the datapath has enrolled already.
func newReconciler(node string, dp Datapath, ho Handoff, log *slog.Logger) (*reconciler, error) {
	have, err := dp.Enrolled()
	if err != nil {
		return nil, fmt.Errorf("list enrolled netns: %w", err)
	}
	r := &reconciler{node: node, dp: dp, ho: ho, log: log,
		cookieOf: func(f *os.File) (uint64, error) { return netns.Cookie(int(f.Fd())) },
		pods:     map[string]*enrolledPod{}, orphans: map[uint64]bool{}, skipped: map[string]bool{}}
	for _, c := range have {
		r.orphans[c] = true
	}
	if len(have) > 0 {
		log.Info("found netns enrolled by an earlier run", "count", len(have))
	}
	return r, nil
}

// wanted returns the workloads of this node that must be enrolled. A pod
// without addresses yet is not: ztunnel could not tell its traffic apart.
func (r *reconciler) wanted(cfg *meshconfig.Config) map[string]*meshconfig.Workload {
	out := map[string]*meshconfig.Workload{}
	for i := range cfg.Workloads {
		w := &cfg.Workloads[i]
		if w.Node == r.node && w.Enrolled && len(w.IPs) > 0 && (r.finder != nil || w.Netns != "") && !r.skipped[w.UID] {
			out[w.UID] = w
		}
	}
	return out
}

// sync applies cfg. A failure for one pod does not stop the others; the
// returned error joins them all, and a later sync retries them.
func (r *reconciler) sync(cfg *meshconfig.Config) error {
	r.forgetSkipped(cfg)
	want := r.wanted(cfg)
	idx := meshconfig.NewIndex(cfg)
	var errs []error
	for _, uid := range sortedKeys(r.pods) {
		if want[uid] != nil {
			continue
		}
		w := idx.ByUID(uid)
		if r.pods[uid].gated && w != nil && w.Node == r.node && w.Enrolled {
			continue // captured at its CNI ADD, in the sandbox's netns; its addresses may not be in the config yet
		}
		if w != nil && w.Node == r.node && !w.Enrolled {
			errs = append(errs, r.optOut(uid))
		} else {
			errs = append(errs, r.remove(uid))
		}
	}
	for _, uid := range sortedKeys(want) {
		if cur := r.pods[uid]; cur == nil || !sameWorkload(&cur.w, want[uid]) {
			errs = append(errs, r.apply(want[uid]))
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		err = r.dropOrphans()
	}
	return err
}

// apply enrolls w (again) and hands it to ztunnel.
func (r *reconciler) apply(w *meshconfig.Workload) error {
	name := w.Namespace + "/" + w.Name
	if old := r.pods[w.UID]; old != nil && old.w.Netns != w.Netns {
		// A new netns (the pod was recreated): take the old one out first,
		// in the order remove explains.
		if err := r.remove(w.UID); err != nil {
			return err
		}
	}
	path, release, err := r.netnsPath(w)
	if errors.Is(err, ErrHostNetwork) {
		r.skipped[w.UID] = true
		r.log.Warn("not enrolling pod: it uses the host network", "pod", name, "uid", w.UID, "err", err)
		return nil
	}
	if err != nil {
		r.log.Debug("cannot find pod netns yet", "pod", name, "uid", w.UID, "err", err)
		return fmt.Errorf("pod %s: %w", name, err)
	}
	defer release()
	cookie, err := r.enroll(path, func(f *os.File, cookie uint64) {
		r.ho.Upsert(handoff.Pod{UID: w.UID, Name: w.Name, Namespace: w.Namespace,
			IPs: slices.Clone(w.IPs), NetnsCookie: cookie}, f)
	})
	if err != nil {
		r.log.Error("cannot enroll pod", "pod", name, "uid", w.UID, "netns", path, "err", err)
		return fmt.Errorf("pod %s: %w", name, err)
	}
	old := r.pods[w.UID]
	r.pods[w.UID] = &enrolledPod{w: cloneWorkload(w), cookie: cookie}
	r.log.Info("pod enrolled", "pod", name, "uid", w.UID, "netns", path, "netns_cookie", cookie)
	if old != nil && old.cookie != cookie {
		// Same path, new namespace behind it; ztunnel replaces the pod on
		// the add above, the old namespace is most likely gone already.
		return r.unenroll(old.cookie, name)
	}
	return nil
}

// enroll opens the netns at path, enrolls it and calls handOff with the
// open namespace. It checks that path still named the namespace it opened.
func (r *reconciler) enroll(path string, handOff func(*os.File, uint64)) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	cookie, err := r.dp.Enroll(path)
	if err != nil {
		return 0, fmt.Errorf("enroll: %w", err)
	}
	delete(r.orphans, cookie)
	opened, err := r.cookieOf(f)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	if opened != cookie {
		r.orphans[cookie] = true // enrolled, but not by what we hold
		return 0, fmt.Errorf("netns at %s changed while enrolling", path)
	}
	handOff(f, cookie)
	return cookie, nil
}

// remove takes a pod out of the mesh.
//
// Order matters: ztunnel first, the datapath second. Remove returns once
// ztunnel has acknowledged the del, that is once it has closed its
// listeners in the pod and taken them out of the listeners map. Only then
// does Unenroll detach sk_lookup and stop the connect redirection. In the
// window between the two, inbound connections find no listener and are
// refused and outbound ones are redirected to a closed port: the pod fails
// closed and never talks unauthenticated while the mesh still claims it.
// With no ztunnel connected Remove returns at once; ztunnel drops the pod
// when the snapshot after its reconnection does not list it.
// The reverse order would leave ztunnel listening on 15001/15006/15008
// inside a pod that is no longer captured, holding ports the app may need
// and reporting a pod as meshed whose traffic already bypasses it.
func (r *reconciler) remove(uid string) error {
	e := r.pods[uid]
	name := e.w.Namespace + "/" + e.w.Name
	r.ho.Remove(uid)
	delete(r.pods, uid)
	if err := r.unenroll(e.cookie, name); err != nil {
		r.pods[uid] = e // the next sync retries
		return err
	}
	r.log.Info("pod unenrolled", "pod", name, "uid", uid, "netns_cookie", e.cookie)
	return nil
}

// unenroll releases cookie unless another pod still uses the namespace.
func (r *reconciler) unenroll(cookie uint64, name string) error {
	for _, e := range r.pods {
		if e.cookie == cookie {
			return nil
		}
	}
	if err := r.dp.Unenroll(cookie); err != nil {
		r.log.Error("cannot unenroll pod", "pod", name, "netns_cookie", cookie, "err", err)
		return fmt.Errorf("pod %s: unenroll: %w", name, err)
	}
	return nil
}

// dropOrphans unenrolls what an earlier run enrolled and no workload wants.
func (r *reconciler) dropOrphans() error {
	var errs []error
	for _, c := range sortedKeys(r.orphans) {
		if err := r.unenroll(c, "(earlier run)"); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.orphans, c)
		r.log.Info("unenrolled netns left by an earlier run", "netns_cookie", c)
	}
	return errors.Join(errs...)
}

// sameWorkload reports whether a and b need no new enrollment or add.
func sameWorkload(a, b *meshconfig.Workload) bool {
	return a.Netns == b.Netns && a.Name == b.Name && a.Namespace == b.Namespace &&
		slices.Equal(a.IPs, b.IPs)
}

func cloneWorkload(w *meshconfig.Workload) meshconfig.Workload {
	c := *w
	c.IPs = slices.Clone(w.IPs)
	c.Labels = nil // not used here
	return c
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
