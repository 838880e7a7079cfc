package agentd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/cnigate"
	"github.com/agentmesh/agentmesh/internal/fdpass"
	"github.com/agentmesh/agentmesh/internal/handoff"
)

// The CNI gate: the AgentMesh CNI plugin (cmd/agentmesh-cni), chained into
// the node's CNI configuration, sends agentd every new pod sandbox's netns
// before the runtime starts the pod's containers (internal/cnigate). The
// controller sends a scheduled pod before it has an address, so the config
// already says whether the pod is enrolled; an enrolled pod is captured and
// handed to ztunnel right then, and the plugin returns only once ztunnel
// has set the pod up. Its containers' first connection is captured.
//
// A pod the config does not name within the gate's wait (the controller
// is away or slow) starts uncaptured, and is captured when the config
// brings it, as without the gate: that keeps pods able to start while the
// control plane is down. A failure to capture an enrolled pod, or no
// ztunnel to serve it, fails the plugin's ADD: the kubelet retries the
// sandbox, and the pod never starts uncaptured.

// gateRequest is one plugin request on its way to the loop.
type gateRequest struct {
	req   cnigate.Request
	netns *os.File // a duplicate the loop owns and closes
	// abandoned is set by the plugin's side when it stopped waiting: the
	// loop drops the request.
	abandoned atomic.Bool
	answer    chan gateAnswer // capacity 1
}

// gateAnswer is the loop's decision: a reply now, or a wait for ztunnel.
type gateAnswer struct {
	reply cnigate.Reply
	wait  func(context.Context) error // set: captured once it returns nil
}

// gate is the plugin's side: it passes requests to the loop and waits.
type gate struct {
	reqs chan<- *gateRequest
	wait time.Duration // for the pod to appear in the config
	log  *slog.Logger
}

// handle answers one plugin request (cnigate.Handler).
func (g *gate) handle(ctx context.Context, req cnigate.Request, netns *os.File) cnigate.Reply {
	own, err := fdpass.Dup(netns)
	if err != nil {
		return cnigate.Reply{Err: err.Error()}
	}
	r := &gateRequest{req: req, netns: own, answer: make(chan gateAnswer, 1)}
	select {
	case g.reqs <- r:
	case <-ctx.Done():
		own.Close()
		return cnigate.Reply{Err: "agentd is stopping"}
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	var a gateAnswer
	select {
	case a = <-r.answer:
	case <-t.C:
		r.abandoned.Store(true)
		select {
		case a = <-r.answer: // decided as the wait ended
			return g.finish(ctx, req, a)
		default:
		}
		reason := fmt.Sprintf("not in the mesh config after %s: starts uncaptured, captured once the config names it", g.wait)
		g.log.Warn("CNI gate: pod starts before the mesh knows it", "pod", req.Namespace+"/"+req.Name, "uid", req.UID, "reason", reason)
		return cnigate.Reply{Reason: reason}
	case <-ctx.Done():
		r.abandoned.Store(true)
		return cnigate.Reply{Err: "agentd is stopping"}
	}
	return g.finish(ctx, req, a)
}

// finish turns the loop's answer into the reply, waiting for ztunnel.
func (g *gate) finish(ctx context.Context, req cnigate.Request, a gateAnswer) cnigate.Reply {
	if a.wait == nil {
		return a.reply
	}
	if err := a.wait(ctx); err != nil {
		return cnigate.Reply{Err: fmt.Sprintf("ztunnel did not set the pod up: %v", err)}
	}
	g.log.Info("CNI gate: pod captured before its containers start", "pod", req.Namespace+"/"+req.Name, "uid", req.UID)
	return cnigate.Reply{Captured: true}
}

// gates are the requests the loop holds until the config names their pod.
type gates []*gateRequest

// add takes r and answers it if idx can; else it keeps it. Like retry, it
// drops the requests whose plugins stopped waiting (their netns go with
// them), also while no config comes.
func (gs *gates) add(r *gateRequest, rc *reconciler, idx *meshconfig.Index) {
	*gs = append(*gs, r)
	gs.retry(rc, idx)
	if slices.Contains(*gs, r) {
		rc.log.Debug("CNI gate: holding pod until the mesh config names it", "pod", r.req.Namespace+"/"+r.req.Name, "uid", r.req.UID)
	}
}

// retry answers what the new config idx can and drops the abandoned.
func (gs *gates) retry(rc *reconciler, idx *meshconfig.Index) {
	*gs = slices.DeleteFunc(*gs, func(r *gateRequest) bool { return rc.decide(r, idx) })
}

// close drops every held request (agentd stops; their plugins get an error).
func (gs *gates) close() {
	for _, r := range *gs {
		r.netns.Close()
	}
	*gs = nil
}

// decide answers r from idx (nil: no config yet) and reports whether r is
// done with; false keeps it for the next config.
func (rc *reconciler) decide(r *gateRequest, idx *meshconfig.Index) bool {
	if r.abandoned.Load() {
		r.netns.Close()
		return true
	}
	w := rc.podOf(r.req, idx)
	if w == nil {
		return false
	}
	defer r.netns.Close()
	r.answer <- rc.capture(r.req, w, r.netns)
	return true
}

// podOf finds req's pod in idx (nil: no config yet): by its uid, or by
// namespace and name on this node where the runtime did not set
// K8S_POD_UID.
func (rc *reconciler) podOf(req cnigate.Request, idx *meshconfig.Index) *meshconfig.Workload {
	if idx == nil {
		return nil
	}
	if req.UID != "" {
		return idx.ByUID(req.UID)
	}
	for i := range idx.Config.Workloads {
		if w := &idx.Config.Workloads[i]; w.Node == rc.node && w.Namespace == req.Namespace && w.Name == req.Name {
			return w
		}
	}
	return nil
}

// capture enrolls pod w from its CNI request with the sandbox's netns and
// hands it to ztunnel, gated.
func (rc *reconciler) capture(req cnigate.Request, w *meshconfig.Workload, ns *os.File) gateAnswer {
	name := req.Namespace + "/" + req.Name
	switch {
	case w.Node != rc.node:
		return gateAnswer{reply: cnigate.Reply{Err: fmt.Sprintf("the mesh config has pod %s on node %q, not on this node %q", name, w.Node, rc.node)}}
	case !w.Enrolled:
		return gateAnswer{reply: cnigate.Reply{Reason: "not enrolled: its namespace is not labelled agentmesh.io/dataplane=enabled, or the pod opts out"}}
	}
	pw := cloneWorkload(w)
	for _, ip := range req.IPs {
		if !slices.Contains(pw.IPs, ip) {
			pw.IPs = append(pw.IPs, ip)
		}
	}
	cookie, err := rc.cookieOf(ns)
	if err != nil {
		return gateAnswer{reply: cnigate.Reply{Err: fmt.Sprintf("netns cookie: %v", err)}}
	}
	if old := rc.pods[w.UID]; old != nil && old.cookie != cookie {
		// A new sandbox of the same pod (the kubelet retried it): the old
		// netns goes first, in the order remove explains.
		if err := rc.remove(w.UID); err != nil {
			return gateAnswer{reply: cnigate.Reply{Err: fmt.Sprintf("release the pod's earlier sandbox: %v", err)}}
		}
	}
	var wait func(context.Context) error
	path := fmt.Sprintf("/proc/self/fd/%d", ns.Fd())
	cookie, err = rc.enroll(path, func(f *os.File, cookie uint64) {
		wait = rc.ho.UpsertGated(handoff.Pod{UID: w.UID, Name: w.Name, Namespace: w.Namespace,
			IPs: slices.Clone(pw.IPs), NetnsCookie: cookie}, f)
	})
	if err != nil {
		rc.log.Error("CNI gate: cannot enroll pod", "pod", name, "uid", w.UID, "err", err)
		return gateAnswer{reply: cnigate.Reply{Err: fmt.Sprintf("enroll: %v", err)}}
	}
	rc.pods[w.UID] = &enrolledPod{w: pw, cookie: cookie, gated: true}
	rc.log.Info("pod enrolled at its CNI ADD", "pod", name, "uid", w.UID, "sandbox", req.ContainerID, "netns_cookie", cookie, "ips", pw.IPs)
	return gateAnswer{wait: wait}
}
