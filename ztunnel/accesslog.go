package ztunnel

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Directions and protocols in access logs and metrics.
const (
	dirOutbound = "outbound"
	dirInbound  = "inbound"

	protoHBONE       = "hbone"
	protoPlaintext   = "plaintext"
	protoPassthrough = "passthrough"
)

// record is one proxied connection, logged as one "access" line.
type record struct {
	direction, protocol string
	src, dst            netip.AddrPort
	srcW, dstW          *meshconfig.Workload
	srcID, dstID        spiffe.ID
	mtls                bool
	sent, received      int64
	start               time.Time
	err                 error
	// authz is the policy decision that refused or closed the connection,
	// or admitted it as a kubelet probe.
	authz *policy.Decision
}

func workloadName(w *meshconfig.Workload) string {
	if w == nil {
		return ""
	}
	return w.Namespace + "/" + w.Name
}

func idString(id spiffe.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// logAccess writes r as the access log line and counts it in the metrics.
func (n *Node) logAccess(r *record) {
	result := "ok"
	level := slog.LevelInfo
	if r.err != nil {
		result = r.err.Error()
	}
	attrs := []slog.Attr{
		slog.String("direction", r.direction),
		slog.String("protocol", r.protocol),
		slog.String("src_addr", r.src.String()),
		slog.String("dst_addr", r.dst.String()),
		slog.String("src_workload", workloadName(r.srcW)),
		slog.String("src_identity", idString(r.srcID)),
		slog.String("dst_workload", workloadName(r.dstW)),
		slog.String("dst_identity", idString(r.dstID)),
		slog.Bool("mtls", r.mtls),
		slog.Int64("bytes_sent", r.sent),
		slog.Int64("bytes_received", r.received),
		slog.Int64("duration_ms", time.Since(r.start).Milliseconds()),
		slog.String("result", result),
	}
	if r.authz != nil {
		attrs = append(attrs, slog.String("authz", string(r.authz.Reason)), slog.String("policy", r.authz.Policy))
	}
	n.log.LogAttrs(context.Background(), level, "access", attrs...)
	n.metrics.closed(r.direction, r.protocol, r.err == nil, r.sent, r.received)
}

// addrPort converts a net.Addr of a TCP conn, zero if it is not one.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if t, ok := a.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	} else if a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
