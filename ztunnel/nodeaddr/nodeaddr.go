// Package nodeaddr keeps the set of the node's own addresses: those of
// the network namespace ztunnel runs in (the node's). A connection to a
// pod whose source is one of them was opened by the node itself, such as
// the kubelet's probes: whatever the CNI, the kernel gives a connection
// from the node to a pod the address of one of the node's interfaces (the
// pod's gateway on its veth, the bridge, or the node IP). No pod or other
// node can open a TCP connection from one of them: the kernel drops IPv4
// packets that arrive with a source address it owns, and the answer to a
// spoofed SYN goes to the node itself.
//
// The set is listed when it is made, again on every address change the
// kernel announces (netlink), and every Resync in case an announcement was
// lost.
package nodeaddr

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Options configure a Set.
type Options struct {
	// Netns is the network namespace to watch; nil is the caller's.
	Netns *os.File
	// Resync is how often the addresses are listed again without an
	// announcement (default 30s).
	Resync time.Duration
	// Logger receives changes of the set (default: discard).
	Logger *slog.Logger
}

// Set is the node's addresses. Contains and Addrs are safe for concurrent
// use; Run keeps the set current.
type Set struct {
	o     Options
	log   *slog.Logger
	addrs atomic.Pointer[[]netip.Addr] // sorted
}

// New lists the addresses once and returns the set.
func New(o Options) (*Set, error) {
	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{o: o, log: o.Logger}
	if err := s.refresh(); err != nil {
		return nil, err
	}
	return s, nil
}

// Contains reports whether a (IPv4-mapped addresses unmapped) is one of
// the node's addresses.
func (s *Set) Contains(a netip.Addr) bool {
	_, ok := slices.BinarySearchFunc(*s.addrs.Load(), a.Unmap(), netip.Addr.Compare)
	return ok
}

// Addrs returns the addresses, sorted.
func (s *Set) Addrs() []netip.Addr { return slices.Clone(*s.addrs.Load()) }

// refresh lists the addresses and swaps them in, logging a change.
func (s *Set) refresh() error {
	addrs, err := s.list()
	if err != nil {
		return err
	}
	old := s.addrs.Swap(&addrs)
	if old == nil || !slices.Equal(*old, addrs) {
		s.log.Info("node addresses", "addrs", addrs)
	}
	return nil
}

// list reads the namespace's addresses that can be a connection's source
// towards a pod: every one but loopback, IPv6 link-local, multicast and
// unspecified.
func (s *Set) list() ([]netip.Addr, error) {
	h, err := netlink.NewHandleAt(s.nsHandle())
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	raw, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list node addresses: %w", err)
	}
	out := []netip.Addr{}
	for _, a := range raw {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && usable(ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func usable(ip netip.Addr) bool {
	return !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsMulticast() && !(ip.Is6() && ip.IsLinkLocalUnicast())
}

// nsHandle is the watched namespace, or none (the caller's).
func (s *Set) nsHandle() netns.NsHandle {
	if s.o.Netns == nil {
		return netns.None()
	}
	return netns.NsHandle(s.o.Netns.Fd())
}
