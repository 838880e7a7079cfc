package agentd

import (
	"fmt"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// optOut takes out of the mesh a pod that is still running on this node
// but no longer enrolled (its namespace lost agentmesh.io/dataplane=enabled
// or the pod got agentmesh.io/dataplane=disabled), without breaking its
// connectivity. What that means, and why:
//
//   - Connections the mesh never captured (made before enrollment, or
//     loopback ones) are plain kernel sockets; nothing here touches them.
//   - New connections after the opt-out go direct, and must never be
//     refused. So the datapath is released first (connect redirection and
//     sk_lookup stop), and only then is ztunnel told. This is the reverse
//     of remove's order: remove fails closed because the pod is leaving
//     (deleted, moved), but an opt-out is the owner asking for plaintext,
//     and a window in which the pod is still captured while ztunnel has
//     already closed its listeners would refuse its connections for
//     nothing. If the datapath fails to release, ztunnel keeps the pod and
//     the next sync retries: the pod stays fully meshed meanwhile.
//   - Connections ztunnel is proxying for the pod at that moment cannot be
//     moved to a direct path: the app's socket is connected to ztunnel's
//     socket (127.0.0.1:15001 outbound, ztunnel's own dial inbound), not
//     to the peer. Closing them is a break the app sees; they must drain:
//     ztunnel stops accepting for the pod and keeps proxying what it has
//     until each connection ends. The del is the same as for a removal;
//     ztunnel tells the two apart by its own config (the pod is still
//     listed on this node, not enrolled) and drains (ztunnel's
//     drainingNode).
func (r *reconciler) optOut(uid string) error {
	e := r.pods[uid]
	name := e.w.Namespace + "/" + e.w.Name
	delete(r.pods, uid)
	if err := r.unenroll(e.cookie, name); err != nil {
		r.pods[uid] = e // still captured and handed over; the next sync retries
		return err
	}
	r.ho.Remove(uid) // ztunnel drains: see above
	r.log.Info("pod opted out of the mesh", "pod", name, "uid", uid, "netns_cookie", e.cookie)
	return nil
}

// netnsPath returns a path that names w's network namespace while release
// has not been called: Workload.Netns in standalone mode, the finder's
// open namespace in Kubernetes mode.
func (r *reconciler) netnsPath(w *meshconfig.Workload) (path string, release func(), err error) {
	if r.finder == nil {
		return w.Netns, func() {}, nil
	}
	f, err := r.finder.Find(w.UID)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd()), func() { f.Close() }, nil
}

// forgetSkipped drops the skipped pods that left cfg.
func (r *reconciler) forgetSkipped(cfg *meshconfig.Config) {
	if len(r.skipped) == 0 {
		return
	}
	idx := meshconfig.NewIndex(cfg)
	for uid := range r.skipped {
		if w := idx.ByUID(uid); w == nil || w.Node != r.node {
			delete(r.skipped, uid)
		}
	}
}
