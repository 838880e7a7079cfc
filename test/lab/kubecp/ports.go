package kubecp

import (
	"context"
	"net"
	"net/netip"

	"github.com/agentmesh/agentmesh/internal/freeport"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// freePorts finds n TCP ports free on addr (inside the named netns when ns
// is set), from below the ephemeral range (see internal/freeport). A
// process could still bind one in between; Start then fails with the
// component's log.
func freePorts(ns string, addr netip.Addr, n int) ([]uint16, error) {
	var ports []uint16
	find := func() (err error) {
		ports, err = freeport.Find(addr, n)
		return err
	}
	if ns == "" {
		return ports, find()
	}
	return ports, netns.DoPath("/run/netns/"+ns, find)
}

// netnsDialer dials from inside the named netns: the socket is made there
// and stays there, whichever goroutine then uses it.
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := netns.DoPath("/run/netns/"+ns, func() error {
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}
