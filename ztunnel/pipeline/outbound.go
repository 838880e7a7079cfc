package pipeline

import (
	"context"
	"net"

	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// Outbound proxies one connection an app of p opened, redirected by the
// eBPF connect hooks to the pod's outbound listener (127.0.0.1:15001 or
// [::1]:15001). A failure before the upstream is up resets the app's
// connection, so it learns at once.
func (pl *Pipeline) Outbound(ctx context.Context, p *flow.Pod, c net.Conn) {
	f, err := classify.Outbound(pl.OrigDst, p, c)
	if err != nil {
		pl.Log.Error("outbound connection without original destination, closed",
			"pod", p.String(), "src_addr", c.RemoteAddr().String(), "dst_addr", c.LocalAddr().String(), "err", err)
		pl.Record.Rejected(flow.Outbound, "no_orig_dst")
		return
	}
	pl.Resolve.Outbound(f, p)
	pl.Record.Opened(f)
	switch detect.Detect(f) {
	case detect.Opaque:
		// The L4 path below. Detected protocols will take the
		// per-request path here.
	}
	up, err := pl.Transport.Dial(ctx, p, f)
	if err != nil {
		f.Err = err
		pl.Record.Access(f)
		limits.Refuse(c)
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	f.Sent, f.Received, f.Err = relay.Join(c, up)
	pl.Record.Access(f)
}
