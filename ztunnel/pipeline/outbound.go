package pipeline

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/balance"
	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// detect decides what f carries (package detect) and counts it.
func (pl *Pipeline) detect(f *flow.Flow, c net.Conn) {
	if pl.Detect == nil {
		return
	}
	dc, _ := c.(detect.Conn)
	pl.Detect.Outbound(f, dc)
	pl.Record.Detected(f)
}

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
	pl.detect(f, c)
	if pl.perRequest(f) {
		pl.outboundHTTP(ctx, p, f, c)
		return
	}
	var up net.Conn
	if f.Service != nil {
		var done func()
		up, done, err = pl.Transport.DialService(ctx, p, f, transport.Endpoints{
			Current: func() ([]balance.Endpoint, <-chan struct{}) {
				changed := pl.ConfigChanged()
				return pl.Resolve.Endpoints(f), changed
			},
			Name:    pl.Resolve.Endpoint,
			Traffic: pl.connTraffic(f.Service),
		})
		if errors.Is(err, transport.ErrConnectionLimit) {
			pl.Record.TrafficEvent(f.Service.Key(), overflowConnections)
		}
		if err != nil {
			if ok, held := pl.serviceWarn.allow(f.Service.Key(), time.Now()); ok {
				pl.Log.Warn("connection to service refused", "service", f.Service.Key(), "dst_addr", f.Dst.String(),
					"pod", p.String(), "attempts", f.Attempts, "err", err, "suppressed_since_last", held)
			}
		} else {
			defer done()
		}
	} else {
		up, err = pl.Transport.Dial(ctx, p, f)
	}
	if err != nil {
		f.Err = err
		pl.Record.Access(f)
		limits.Refuse(c)
		return
	}
	pl.Record.Connected(f)
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	joinLocal(up, c)
	f.Sent, f.Received, f.Err = relay.Join(c, up)
	finishLocal(up, f)
	pl.Record.Access(f)
}
