package lab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// wireName is the netns holding the bridge that joins the nodes.
func (l *Lab) wireName() string { return l.id + "-wire" }

// nodeNetns is the netns of node i.
func (l *Lab) nodeNetns(i int) string { return l.id + "-" + nodeName(i) }

// setupWire creates the wire netns and its bridge.
func (l *Lab) setupWire() error {
	h, err := createNetns(l.wireName(), false)
	if err != nil {
		return err
	}
	defer h.Close()
	nl, err := handleAt(h)
	if err != nil {
		return err
	}
	defer nl.Close()
	if err := setLoUp(nl); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := nl.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	return linkUp(nl, br)
}

// setupNode creates node i's netns, its veth to the bridge, its addresses
// and the routes to the other nodes' pod ranges.
func (l *Lab) setupNode(i int) error {
	h, err := createNetns(l.nodeNetns(i), true)
	if err != nil {
		return err
	}
	defer h.Close()
	wh, err := openNetns(l.wireName())
	if err != nil {
		return err
	}
	defer wh.Close()
	nl, err := handleAt(h)
	if err != nil {
		return err
	}
	defer nl.Close()
	if err := setLoUp(nl); err != nil {
		return err
	}
	eth, err := addVeth(nl, podIfName, nodeName(i), wh)
	if err != nil {
		return err
	}
	if err := l.attachToBridge(nodeName(i)); err != nil {
		return err
	}
	return l.configureNodeLink(nl, eth, i)
}

// configureNodeLink addresses node i's eth0 and routes the other pod
// ranges (a real node also gets default routes).
func (l *Lab) configureNodeLink(nl *netlink.Handle, eth netlink.Link, i int) error {
	for _, p := range []netip.Prefix{netip.PrefixFrom(nodeIPv4(i), 24), netip.PrefixFrom(nodeIPv6(i), 64)} {
		if err := addAddr(nl, eth, p); err != nil {
			return err
		}
	}
	if err := linkUp(nl, eth); err != nil {
		return err
	}
	var errs []error
	if l.isRealNode(i) {
		// As a real node has: kube-proxy rewrites Service VIPs after the
		// route lookup, which fails without a route ("network is
		// unreachable"), and the kubelet picks its node IP by it. The
		// gateway is the control plane's address on the wire.
		errs = append(errs, addRoute(nl, eth, netip.MustParsePrefix("0.0.0.0/0"), KubeAPIIPv4),
			addRoute(nl, eth, netip.MustParsePrefix("::/0"), kubeAPIIPv6))
	}
	for j := 1; j <= l.opts.Nodes; j++ {
		if j == i {
			continue
		}
		errs = append(errs, addRoute(nl, eth, podPrefixV4(j), nodeIPv4(j)))
		errs = append(errs, addRoute(nl, eth, podPrefixV6(j), nodeIPv6(j)))
	}
	return errors.Join(errs...)
}

// attachToBridge enslaves the wire-side veth to the bridge and sets it up.
func (l *Lab) attachToBridge(port string) error {
	return l.withWireBridge(func(nl *netlink.Handle, br netlink.Link) error {
		p, err := nl.LinkByName(port)
		if err != nil {
			return fmt.Errorf("find %s: %w", port, err)
		}
		if err := nl.LinkSetMaster(p, br); err != nil {
			return fmt.Errorf("attach %s to bridge: %w", port, err)
		}
		return linkUp(nl, p)
	})
}

// withWireBridge runs fn with a netlink handle in the wire netns and its
// bridge.
func (l *Lab) withWireBridge(fn func(nl *netlink.Handle, br netlink.Link) error) error {
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
	return fn(nl, br)
}
