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
// the caller's IP and a port of the netns's ephemeral range chosen here
// (round robin from a random start), so that its four-tuple is known and
// recorded in table before the SYN is sent. The kernel's own choice would
// come too late (at connect, which sends the SYN) or, bound to port 0,
// skip every port a TIME_WAIT entry holds, which slows down past some
// 14 000 connections a minute from one caller; SO_REUSEADDR lets a bind
// share those ports, and connect refuses a four-tuple in use
// (EADDRNOTAVAIL), when the next port is tried.
type fromCaller struct {
	table  DeliveryTable
	v4, v6 bool // the netns routes the replies of that family back
	lo, n  uint32
	next   atomic.Uint32
}

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
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.next.Store(rand.Uint32N(d.n))
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
// netns routes back.
func (d *fromCaller) usable(caller, app netip.Addr) bool {
	if !caller.IsValid() || caller.IsLoopback() || caller.IsUnspecified() || caller.Is4() != app.Is4() {
		return false
	}
	return caller.Is4() && d.v4 || caller.Is6() && d.v6
}

func (d *fromCaller) port() uint16 { return uint16(d.lo + d.next.Add(1)%d.n) }

// dial connects to app from caller's IP inside the netns open at fd.
func (d *fromCaller) dial(ctx context.Context, fd int, caller netip.Addr, app netip.AddrPort) (net.Conn, error) {
	var last error
	for range deliveryTries {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("deliver to %s from %s: %w", app, caller, err)
		}
		from := netip.AddrPortFrom(caller, d.port())
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
	return nil, fmt.Errorf("deliver to %s from %s: no free port in %d tries: %w", app, caller, deliveryTries, last)
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
