package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
)

// setupPodNetwork creates the pod netns, its veth (eth0 in the pod, vethK
// in the node), addresses and routes on both sides.
func (l *Lab) setupPodNetwork(p *Pod) error {
	h, err := createNetns(p.NetnsName(), false)
	if err != nil {
		return err
	}
	defer h.Close()
	podNL, err := handleAt(h)
	if err != nil {
		return err
	}
	defer podNL.Close()
	nh, err := openNetns(l.nodeNetns(p.Node))
	if err != nil {
		return err
	}
	defer nh.Close()
	nodeNL, err := handleAt(nh)
	if err != nil {
		return err
	}
	defer nodeNL.Close()
	veth, err := addVeth(nodeNL, p.nodeVeth(), podIfName, h)
	if err != nil {
		return err
	}
	if err := configureNodeSide(nodeNL, veth, p); err != nil {
		return err
	}
	return configurePodSide(podNL, p)
}

// configureNodeSide gives the node's veth end the gateway addresses and
// routes the pod's addresses to it.
func configureNodeSide(nl *netlink.Handle, veth netlink.Link, p *Pod) error {
	for _, gw := range []netip.Addr{podIPv4(p.Node, 1), podIPv6(p.Node, 1)} {
		if err := addAddr(nl, veth, hostPrefix(gw)); err != nil {
			return err
		}
	}
	if err := linkUp(nl, veth); err != nil {
		return err
	}
	for _, ip := range []netip.Addr{p.IPv4(), p.IPv6()} {
		if err := addRoute(nl, veth, hostPrefix(ip), netip.Addr{}); err != nil {
			return err
		}
	}
	return nil
}

// configurePodSide addresses the pod's eth0 and routes everything via the
// node-side gateway (198.19.<i>.1, fd00:19:<i>::1).
func configurePodSide(nl *netlink.Handle, p *Pod) error {
	if err := setLoUp(nl); err != nil {
		return err
	}
	eth, err := nl.LinkByName(podIfName)
	if err != nil {
		return fmt.Errorf("find pod eth0: %w", err)
	}
	for _, ip := range []netip.Addr{p.IPv4(), p.IPv6()} {
		if err := addAddr(nl, eth, hostPrefix(ip)); err != nil {
			return err
		}
	}
	if err := linkUp(nl, eth); err != nil {
		return err
	}
	for _, gw := range []netip.Addr{podIPv4(p.Node, 1), podIPv6(p.Node, 1)} {
		if err := addRoute(nl, eth, hostPrefix(gw), netip.Addr{}); err != nil {
			return err
		}
		if err := addRoute(nl, eth, defaultRoute(gw), gw); err != nil {
			return err
		}
	}
	return nil
}

// mkdirCgroup makes a cgroup directory (an existing one is fine).
func mkdirCgroup(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	return nil
}

// newUID returns a random RFC 4122 version 4 UUID, as Kubernetes uses.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random uid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}
