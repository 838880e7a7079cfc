package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// addVeth creates a veth pair: name inside the netns of nl, peer inside the
// netns peerNs, and returns the local end.
func addVeth(nl *netlink.Handle, name, peer string, peerNs vnetns.NsHandle) (netlink.Link, error) {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(peerNs)),
	}
	if err := nl.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("add veth %s/%s: %w", name, peer, err)
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return l, nil
}

// addAddr assigns p to link without duplicate address detection.
func addAddr(nl *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
	if err := nl.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

// addRoute adds a route to dst through link, via gw when gw is valid
// (otherwise on-link with scope link).
func addRoute(nl *netlink.Handle, link netlink.Link, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst)}
	if gw.IsValid() {
		r.Gw = net.IP(gw.AsSlice())
	} else if dst.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := nl.RouteAdd(r); err != nil {
		return fmt.Errorf("add route %s via %v dev %s: %w", dst, gw, link.Attrs().Name, err)
	}
	return nil
}

// linkUp sets link up.
func linkUp(nl *netlink.Handle, link netlink.Link) error {
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// ipNet converts p to the net package's form.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// hostPrefix is a as a /32 or /128.
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// defaultRoute is 0.0.0.0/0 or ::/0 for a's family.
func defaultRoute(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	return netip.MustParsePrefix("::/0")
}
