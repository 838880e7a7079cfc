package podnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// DeliveryTable records the connections ztunnel delivers from a caller's
// address, for the sk_lookup program to let their SYN reach the app (the
// pinned deliveries map). Put fails with bpf.ErrDeliveryTaken when the
// four-tuple is recorded already.
type DeliveryTable interface {
	Put(app, caller netip.AddrPort) error
	Delete(app, caller netip.AddrPort) error
}

// FwmarkAccept is the sysctl, per netns, that gives an accepted TCP socket
// (IPv4 and IPv6) the mark of the SYN that opened it.
const FwmarkAccept = "/proc/sys/net/ipv4/tcp_fwmark_accept"

// portRange is the netns's ephemeral port range.
const portRange = "/proc/sys/net/ipv4/ip_local_port_range"

// deliveryTries bounds the local ports one delivery tries (each taken by
// another connection of the same caller to the same app).
const deliveryTries = 16

// fromCaller delivers connections into one pod netns from the caller's
// address: a socket with IP_TRANSPARENT and mesh.DeliveryMark, bound to
// the caller's IP and a port chosen here (round robin from a random
// start), so that its four-tuple is known and recorded in table before
// the SYN is sent. The kernel's own choice would come too late (at
// connect, which sends the SYN) or, bound to port 0, skip every port a
// TIME_WAIT entry holds, which slows down past some 14 000 connections a
// minute from one caller; SO_REUSEADDR lets a bind share those ports, and
// connect refuses a four-tuple in use (EADDRNOTAVAIL), when the next port
// is tried.
//
// Which ports: a mesh caller's own connections never reach the app's
// address (its pod's are captured, its tunnel's go to port 15008), so its
// deliveries take ports of the netns's ephemeral range. A caller from
// outside the mesh reaches the pod directly, and each of its connections
// to the app holds a socket in the pod netns (ztunnel's, steered there):
// a delivery on one of their ports would send its SYN into that
// established socket instead of the app, and a connection the caller
// opens later from a live delivery's port would hit the app's end of the
// delivery and reset it. Its deliveries therefore take ports from
// directLo up to the ephemeral range, which clients' kernels do not pick
// source ports from (Linux 32768-60999, Windows and macOS 49152-65535),
// and never the port of the connection being delivered. A caller that
// binds a source port below 32768 itself, or a NAT that maps it there,
// can still meet a live delivery's port: the delivery is then reset.
type fromCaller struct {
	table  DeliveryTable
	v4, v6 bool // the netns routes the replies of that family back
	lo, n  uint32
	next   atomic.Uint32
	// The ports for callers from outside the mesh are
	// [directLo, directLo+directN); directN is 0 when the ephemeral
	// range leaves no room below it (they are delivered from the pod's
	// own address then).
	directN    uint32
	directNext atomic.Uint32
}

// directLo is the lowest port a delivery for a caller from outside the
// mesh takes; directMin the fewest ports that make such deliveries
// worthwhile.
const (
	directLo  = 1024
	directMin = 4096
)

// setupFromCaller prepares the netns open at fd for deliveries from the
// caller's address: tcp_fwmark_accept, and for IPv4 and IPv6 the rule
// "fwmark DeliveryMark lookup DeliveryRouteTable" with the table's one
// route "local default dev lo". IPv4 must work; IPv6 may be missing (a
// pod without it). All of it is idempotent (a ztunnel restart).
func setupFromCaller(fd int, table DeliveryTable, procSysNet string) (*fromCaller, error) {
	d := &fromCaller{table: table}
	err := netns.Do(fd, func() error {
		if err := writeSysctl(procSysNet, FwmarkAccept); err != nil {
			return err
		}
		path := sysctlPath(procSysNet, portRange)
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		lo, hi, err := parsePortRange(string(b))
		if err != nil {
			return err
		}
		d.lo, d.n = lo, hi-lo+1
		if lo >= directLo+directMin {
			d.directN = min(lo, 32768) - directLo
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.next.Store(rand.Uint32N(d.n))
	if d.directN > 0 {
		d.directNext.Store(rand.Uint32N(d.directN))
	}
	h, err := netlink.NewHandleAt(vnetns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("netlink in pod netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if err := routeToSelf(h, lo.Attrs().Index, unix.AF_INET); err != nil {
		return nil, err
	}
	d.v4 = true
	d.v6 = routeToSelf(h, lo.Attrs().Index, unix.AF_INET6) == nil
	return d, nil
}

// routeToSelf adds the rule and route of one family.
func routeToSelf(h *netlink.Handle, lo, family int) error {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	rt := &netlink.Route{LinkIndex: lo, Dst: dst, Table: mesh.DeliveryRouteTable, Type: unix.RTN_LOCAL,
		Scope: netlink.SCOPE_HOST, Family: family}
	if err := h.RouteReplace(rt); err != nil {
		return fmt.Errorf("route local %s dev lo table %d: %w", dst, mesh.DeliveryRouteTable, err)
	}
	r := netlink.NewRule()
	r.Family, r.Priority, r.Table = family, mesh.DeliveryRulePriority, mesh.DeliveryRouteTable
	r.Mark = mesh.DeliveryMark
	mask := uint32(0xffffffff)
	r.Mask = &mask
	if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rule fwmark %#x lookup %d (family %d): %w", mesh.DeliveryMark, mesh.DeliveryRouteTable, family, err)
	}
	return nil
}

// parsePortRange reads ip_local_port_range ("32768\t60999\n").
func parsePortRange(s string) (lo, hi uint32, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: %q: want two ports", portRange, s)
	}
	l, err1 := strconv.ParseUint(f[0], 10, 16)
	h, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return 0, 0, fmt.Errorf("%s: %q: want two ports, low first", portRange, s)
	}
	return uint32(l), uint32(h), nil
}

// usable reports whether a delivery to app can come from caller: a real
// (not loopback, not unspecified) address of app's family that this
// netns routes back; for a caller from outside the mesh (a port given),
// only with a range of ports for it.
func (d *fromCaller) usable(caller netip.AddrPort, app netip.Addr) bool {
	a := caller.Addr()
	if !a.IsValid() || a.IsLoopback() || a.IsUnspecified() || a.Is4() != app.Is4() {
		return false
	}
	if caller.Port() != 0 && d.directN == 0 {
		return false
	}
	return a.Is4() && d.v4 || a.Is6() && d.v6
}

// port is the next port for a delivery from caller: see fromCaller.
func (d *fromCaller) port(caller netip.AddrPort) uint16 {
	if caller.Port() == 0 {
		return uint16(d.lo + d.next.Add(1)%d.n)
	}
	p := uint16(directLo + d.directNext.Add(1)%d.directN)
	if p == caller.Port() {
		p = uint16(directLo + d.directNext.Add(1)%d.directN)
	}
	return p
}

// dial connects to app from caller's IP inside the netns open at fd.
func (d *fromCaller) dial(ctx context.Context, fd int, caller netip.AddrPort, app netip.AddrPort) (net.Conn, error) {
	var last error
	for range deliveryTries {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("deliver to %s from %s: %w", app, caller.Addr(), err)
		}
		from := netip.AddrPortFrom(caller.Addr(), d.port(caller))
		if err := d.table.Put(app, from); err != nil {
			if errors.Is(err, bpf.ErrDeliveryTaken) {
				last = err
				continue
			}
			return nil, err
		}
		c, err := netns.DialTCP(ctx, fd, app, func(fd int) error { return bindCaller(fd, from) })
		// Connect returned: the SYN went through sk_lookup (or never
		// will). A failed delete leaves an entry the LRU ages out.
		d.table.Delete(app, from) //nolint:errcheck // see above
		if errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EADDRNOTAVAIL) {
			last = err // the port is another connection's
			continue
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("deliver to %s from %s: no free port in %d tries: %w", app, caller.Addr(), deliveryTries, last)
}

// bindCaller marks socket fd as a delivery and binds it to from.
func bindCaller(fd int, from netip.AddrPort) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, mesh.DeliveryMark); err != nil {
		return fmt.Errorf("set SO_MARK: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	var sa unix.Sockaddr
	if from.Addr().Is4() {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
			return fmt.Errorf("set IP_TRANSPARENT: %w", err)
		}
		sa = &unix.SockaddrInet4{Port: int(from.Port()), Addr: from.Addr().As4()}
	} else {
		if err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1); err != nil {
			return fmt.Errorf("set IPV6_TRANSPARENT: %w", err)
		}
		sa = &unix.SockaddrInet6{Port: int(from.Port()), Addr: from.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind %s: %w", from, err)
	}
	return nil
}
