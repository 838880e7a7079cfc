package lab

import (
	"errors"
	"fmt"
	"net/netip"
)

// setupKubeWire gives the wire netns an address on the bridge for the
// control plane, and routes back to every node's pod ranges.
func (l *Lab) setupKubeWire() error {
	h, err := openNetns(l.wireName())
	if err != nil {
		return err
	}
	defer h.Close()
	nl, err := handleAt(h)
	if err != nil {
		return err
	}
	defer nl.Close()
	br, err := nl.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("find bridge: %w", err)
	}
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
}
