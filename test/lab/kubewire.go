package lab

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// setupKubeWire gives the wire netns an address on the bridge for the
// control plane, and routes back to every node's pod ranges.
func (l *Lab) setupKubeWire() error {
	return l.withWireBridge(func(nl *netlink.Handle, br netlink.Link) error {
		for _, p := range []netip.Prefix{netip.PrefixFrom(KubeAPIIPv4, 24), netip.PrefixFrom(kubeAPIIPv6, 64)} {
			if err := addAddr(nl, br, p); err != nil {
				return err
			}
		}
		var errs []error
		for i := 1; i <= l.opts.Nodes; i++ {
			errs = append(errs, addRoute(nl, br, podPrefixV4(i), nodeIPv4(i)),
				addRoute(nl, br, podPrefixV6(i), nodeIPv6(i)))
		}
		return errors.Join(errs...)
	})
}
