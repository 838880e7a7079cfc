package ztunnel

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/resolve"
)

// httpError is an answer other than 200.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) *httpError {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// serveAuthzCheck answers GET /debug/authz?from=&to=&port=.
func (n *Node) serveAuthzCheck(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	res, err := n.checkAuthz(q.Get("from"), q.Get("to"), q.Get("port"))
	if err != nil {
		code := http.StatusInternalServerError
		if he, ok := err.(*httpError); ok {
			code = he.code
		}
		http.Error(w, err.Error(), code)
		return
	}
	writeJSON(w, res)
}

// checkAuthz evaluates a connection from from (namespace/pod or an ip) to
// the workload to (namespace/pod, on this node) on port with the config in
// force, as /debug/authz does.
func (n *Node) checkAuthz(from, to, port string) (*debug.Authz, error) {
	idx := n.Index()
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, badRequest("bad port %q: want 1-65535", port)
	}
	dst, err := n.checkTarget(idx, to)
	if err != nil {
		return nil, err
	}
	var dstAddr netip.Addr
	if len(dst.IPs) > 0 {
		dstAddr = dst.IPs[0].Unmap()
	}
	src, c, err := checkSource(idx, from, dstAddr)
	if err != nil {
		return nil, err
	}
	c.Port = uint16(p)
	if !c.MTLS && n.auth.FromNode(c.Addr) {
		c.FromNode, src.Node = true, true
	}
	d := policy.Evaluate(dst.Authz, c)
	res := &debug.Authz{
		Node: n.opts.NodeName, From: src, Port: c.Port,
		To:       debug.AuthzDest{Workload: record.WorkloadName(dst), UID: dst.UID, Addr: dstAddr},
		Policies: []string{},
		Decision: debug.AuthzDecision{Allow: d.Allow, Reason: d.Reason, Policy: d.Policy, Rule: d.Rule},
	}
	if t := dst.Authz; t != nil {
		res.MTLSMode, res.Default = policy.MTLSPermissive, policy.ActionAllow
		if t.MTLSMode == policy.MTLSStrict {
			res.MTLSMode = policy.MTLSStrict
		}
		if t.Default == policy.ActionDeny {
			res.Default = policy.ActionDeny
		}
		for _, pol := range t.Policies {
			res.Policies = append(res.Policies, pol.Namespace+"/"+pol.Name)
		}
		res.ProbePorts = t.ProbePorts
	}
	return res, nil
}

// checkTarget finds the destination workload, which must run on this node
// (only its node has its policy data).
func (n *Node) checkTarget(idx *meshconfig.Index, to string) (*meshconfig.Workload, error) {
	if to == "" {
		return nil, badRequest("missing to: want namespace/pod")
	}
	w, err := workloadByName(idx, to)
	if err != nil {
		return nil, err
	}
	if node := n.opts.NodeName; node != "" && w.Node != node {
		return nil, badRequest("to %s runs on node %s, ask that node's ztunnel", to, w.Node)
	}
	return w, nil
}

// checkSource is the source from as a connection: an enrolled workload's
// mTLS identity, or plaintext from a workload's (or a bare) address. A
// workload's address is its first of dst's family, else its first.
func checkSource(idx *meshconfig.Index, from string, dst netip.Addr) (debug.AuthzPeer, policy.Conn, error) {
	if from == "" {
		return debug.AuthzPeer{}, policy.Conn{}, badRequest("missing from: want namespace/pod or an ip")
	}
	if ip, err := netip.ParseAddr(from); err == nil {
		ip = ip.Unmap()
		owner := idx.ByIP(ip)
		if owner != nil && owner.Enrolled { // as resolve.Plaintext
			return debug.AuthzPeer{Addr: ip, Impostor: record.WorkloadName(owner)}, policy.Conn{Addr: ip}, nil
		}
		return debug.AuthzPeer{Workload: record.WorkloadName(owner), Addr: ip},
			policy.Conn{Addr: ip, Workload: resolve.UID(owner)}, nil
	}
	w, err := workloadByName(idx, from)
	if err != nil {
		return debug.AuthzPeer{}, policy.Conn{}, err
	}
	addr := addrLike(w.IPs, dst)
	peer := debug.AuthzPeer{Workload: record.WorkloadName(w), Addr: addr}
	c := policy.Conn{Addr: addr, Workload: w.UID}
	if w.Enrolled {
		c.MTLS, c.Identity = true, idx.Config.Identity(w)
		peer.MTLS, peer.Identity = true, c.Identity.String()
	}
	return peer, c, nil
}

// addrLike is the first of ips of like's family, else the first of ips.
func addrLike(ips []netip.Addr, like netip.Addr) netip.Addr {
	for _, ip := range ips {
		if ip.Unmap().Is4() == like.Is4() {
			return ip.Unmap()
		}
	}
	if len(ips) > 0 {
		return ips[0].Unmap()
	}
	return netip.Addr{}
}

// workloadByName finds "namespace/name" in the config.
func workloadByName(idx *meshconfig.Index, name string) (*meshconfig.Workload, error) {
	ns, pod, ok := strings.Cut(name, "/")
	if !ok || ns == "" || pod == "" {
		return nil, badRequest("bad workload %q: want namespace/pod", name)
	}
	for i := range idx.Config.Workloads {
		if w := &idx.Config.Workloads[i]; w.Namespace == ns && w.Name == pod {
			return w, nil
		}
	}
	return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no workload %s in the mesh config", name)}
}
