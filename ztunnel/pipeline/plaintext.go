package pipeline

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/classify"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
	"github.com/agentmesh/agentmesh/ztunnel/resolve"
)

// Plaintext delivers a connection sk_lookup steered to pod p's plaintext
// listener, if p's policy admits plaintext from its source. A decision to
// close it later (a config change) closes both ends.
func (pl *Pipeline) Plaintext(ctx context.Context, p *flow.Pod, live *authorize.Live, c net.Conn) {
	f := classify.Plaintext(c)
	if w := pl.Resolve.Plaintext(f, p); w != nil {
		pl.Record.Suspicious("mesh_source_address")
		if ok, held := pl.suspectWarn.allow(f.Src.Addr().String(), time.Now()); ok {
			pl.Log.Warn("plaintext connection from the address of a mesh pod: treated as from outside the mesh (no workload identity)",
				"src_addr", f.Src.String(), "address_owner", recordName(w), "pod", p.String(), "dst_addr", f.Dst.String(),
				"suppressed_since_last", held)
		}
	}
	pl.Record.Opened(f)
	if err := authorize.Destination(p, f.Dst); err != nil {
		f.Err = fmt.Errorf("refused: %w", err)
		pl.Record.Access(f)
		return
	}
	ac := &authorize.Conn{
		Pod: p, Live: live, Src: f.Src, Dst: f.Dst, SrcWorkload: recordName(f.SrcWorkload),
		Policy: policy.Conn{Workload: resolve.UID(f.SrcWorkload), Addr: f.Src.Addr(), Port: f.Dst.Port(),
			FromNode: pl.Authorize.FromNode(f.Src.Addr())},
	}
	d := pl.Authorize.Admit(ac)
	if !d.Allow {
		f.Err, f.Authz = &authorize.Error{D: d}, &d
		pl.Record.Access(f)
		return
	}
	if d.Reason == policy.ReasonKubeletProbe {
		f.Authz = &d // the access line says why policies did not apply
	}
	defer ac.End()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ac.Attach(func() { cancel(); c.Close() })
	// From the caller's address and a port its own connections do not
	// use: this one's socket in the pod netns (steered, pod IP:app port
	// <-> caller) holds a four-tuple that a delivery on its port would
	// hit instead of the app (see podnet's fromCaller).
	up, err := pl.Transport.Deliver(ctx, p, f.Src, f.Dst)
	if err == nil {
		pl.Record.Connected(f)
		stop := context.AfterFunc(ctx, func() { up.Close() })
		f.Sent, f.Received, f.Err = relay.Join(c, up)
		stop()
	} else {
		f.Err = err
	}
	if d := ac.Revocation(); d != nil {
		f.Err, f.Authz = &authorize.Error{D: *d, Closed: true}, d
	}
	pl.Record.Access(f)
}
