package kubecp

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// freePorts finds n TCP ports free on addr (inside the named netns when ns
// is set) by binding them all at once and closing them again. A process
// could take one in between; Start then fails with the component's log.
func freePorts(ns string, addr netip.Addr, n int) ([]uint16, error) {
	var ports []uint16
	find := func() error {
		var ls []net.Listener
		defer func() {
			for _, l := range ls {
				l.Close()
			}
		}()
		for range n {
			l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			if err != nil {
				return fmt.Errorf("find free port: %w", err)
			}
			ls = append(ls, l)
			ports = append(ports, uint16(l.Addr().(*net.TCPAddr).Port))
		}
		return nil
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
