package policy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// probe makes one connection from inside the client pod's netns to dst and
// reports whether its byte was echoed (allowed). A denied connection is
// accepted by the source node's ztunnel and closed once the destination
// answers 401, so the read ends with EOF.
func probe(ctx context.Context, nsPath string, dst netip.AddrPort) bool {
	var c net.Conn
	err := netns.DoPath(nsPath, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		var err error
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'p'}); err != nil {
		return false
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err == nil && b[0] == 'p'
}

// waitFor probes dst until its outcome is want and returns the time since
// start at which it was first seen.
func waitFor(ctx context.Context, nsPath string, dst netip.AddrPort, want bool, start time.Time, every time.Duration) (time.Duration, error) {
	for {
		if probe(ctx, nsPath, dst) == want {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(every):
		}
	}
}
