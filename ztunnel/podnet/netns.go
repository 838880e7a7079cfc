package podnet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// Netns opens the real Net of a pod: its network namespace, entered with
// setns only for the moment a socket is made.
type Netns struct {
	// Log says when a pod's TIME_WAIT reuse or deliveries from the
	// caller's address cannot be set up (nil: discard).
	Log *slog.Logger
	// Deliveries, when set, makes DialFrom deliver from the caller's
	// address (see fromCaller); nil delivers from the pod's own.
	Deliveries DeliveryTable
	// ProcSysNet is where this process sees /proc/sys/net, read-write
	// ("": there). A container's /proc/sys is read-only, so the chart
	// mounts the host's /proc/sys/net elsewhere: a net sysctl's file is
	// the one of the netns of whoever opens it, through any mount, so a
	// thread that joined the pod's netns sets the pod's.
	ProcSysNet string
}

// Open takes ns over, turns on the reuse of TIME_WAIT ports for the
// connections made from the pod's netns (reuseTimeWait) and, with
// Deliveries, sets the netns up for deliveries from the caller's address.
func (n Netns) Open(p handoff.Pod, ns *os.File) (Net, error) {
	log := n.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fd := int(ns.Fd())
	if err := reuseTimeWait(fd, n.ProcSysNet); err != nil {
		log.Warn("cannot let deliveries reuse TIME_WAIT ports: new connections to the pod slow down past some 14 000 a minute",
			"pod", p.Namespace+"/"+p.Name, "err", err)
	}
	if err := migrateRequests(fd, n.ProcSysNet); err != nil {
		log.Warn("cannot migrate queued connections between ztunnels: a ztunnel upgrade may reset the pod's connections not yet accepted",
			"pod", p.Namespace+"/"+p.Name, "err", err)
	}
	nn := &nsNet{f: ns, fd: fd}
	if n.Deliveries != nil {
		d, err := setupFromCaller(fd, n.Deliveries, n.ProcSysNet)
		if err != nil {
			log.Warn("cannot deliver from the caller's address: the pod's apps see connections from its own address",
				"pod", p.Namespace+"/"+p.Name, "err", err)
		} else {
			if !d.v6 {
				log.Info("IPv6 connections are delivered from the pod's own address (no IPv6 route back in its netns)",
					"pod", p.Namespace+"/"+p.Name)
			}
			nn.from = d
		}
	}
	return nn, nil
}

// TimeWaitReuse is the sysctl, per netns, that lets a connect take a local
// port still in TIME_WAIT with the same peer once a second has passed
// (TCP timestamps tell the connections apart).
const TimeWaitReuse = "/proc/sys/net/ipv4/tcp_tw_reuse"

// reuseTimeWait sets TimeWaitReuse to 1 in the netns open at fd. The
// tunnel delivers every inbound connection to the app from the pod's own
// address, and closes first when the client does, so each one leaves a
// TIME_WAIT entry from the pod's address to the app's port. The default
// (2) reuses those only on loopback: after some 14 000 of them (the half
// of the ephemeral range Linux prefers for connects) every delivery
// searches for a free port, and after some 28 000 in a minute deliveries
// fail. With 1 they reuse ports a second old. The app's own outbound
// connections go to ztunnel over loopback, where the default reused them
// already.
func reuseTimeWait(fd int, procSysNet string) error { return enableIn(fd, procSysNet, TimeWaitReuse) }

// MigrateRequests is the sysctl, per netns, that moves the connections in
// a closing listener's queues (accepted by the kernel, not yet by the
// process, or still in their handshake) to another listener of the same
// SO_REUSEPORT group instead of resetting them.
const MigrateRequests = "/proc/sys/net/ipv4/tcp_migrate_req"

// migrateRequests sets MigrateRequests to 1 in the netns open at fd. Every
// pod listener is in a SO_REUSEPORT group (listen), so a new ztunnel binds
// beside the old one during an upgrade; when the old one then closes its
// listeners, what their queues hold goes to the new one's.
func migrateRequests(fd int, procSysNet string) error {
	return enableIn(fd, procSysNet, MigrateRequests)
}

// enableIn sets the sysctl at path (under /proc/sys/net) to 1 in the netns
// open at fd.
func enableIn(fd int, procSysNet, path string) error {
	return netns.Do(fd, func() error { return writeSysctl(procSysNet, path) })
}

// sysctlPath is the sysctl at path (under /proc/sys/net) as this process
// sees it: below procSysNet unless that is "".
func sysctlPath(procSysNet, path string) string {
	if procSysNet == "" {
		return path
	}
	return filepath.Join(procSysNet, strings.TrimPrefix(path, "/proc/sys/net/"))
}

// writeSysctl sets the sysctl at path (under /proc/sys/net) to 1 in the
// calling thread's netns.
func writeSysctl(procSysNet, path string) error {
	p := sysctlPath(procSysNet, path)
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return fmt.Errorf("set %s: %w", p, err)
	}
	return nil
}

type nsNet struct {
	f    *os.File
	fd   int
	from *fromCaller // nil: deliveries come from the pod's address
}

// Listen listens inside the namespace with plain TCP (the SOCKHASH and
// sk_lookup take no MPTCP sockets, and Go listens with MPTCP by default)
// and SO_REUSEPORT: a second ztunnel (an upgrade's) listens beside this
// one, and migrateRequests hands it what this one's queues hold when it
// closes.
func (n *nsNet) Listen(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: ReusePort}
	lc.SetMultipathTCP(false)
	var ln net.Listener
	err := netns.Do(n.fd, func() error {
		var err error
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in pod netns: %w", addr, err)
	}
	return ln, nil
}

// Dial makes the socket inside the namespace and connects it on Go's
// poller (netns.DialTCP), marked with mesh.SocketMark.
func (n *nsNet) Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c, err := netns.DialTCP(ctx, n.fd, addr, markSocket)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// DialFrom connects to the app at addr from the caller's address when
// the netns is set up for it and from is usable there, else as Dial.
func (n *nsNet) DialFrom(ctx context.Context, from netip.AddrPort, addr netip.AddrPort) (net.Conn, error) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	app := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if n.from == nil || !n.from.usable(from, app.Addr()) {
		return n.Dial(ctx, addr)
	}
	return n.from.dial(ctx, n.fd, from, app)
}

func (n *nsNet) Cookie() (uint64, error) { return netns.Cookie(n.fd) }

func (n *nsNet) Close() error { return n.f.Close() }

// ReusePort (a net.ListenConfig Control) sets SO_REUSEPORT on a socket
// before bind: another ztunnel (the next version, during an upgrade) may
// bind the same address beside it. Only a process of the same user joins
// a group.
func ReusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", serr)
	}
	return nil
}

// markSocket sets SO_MARK = mesh.SocketMark on a socket before connect.
func markSocket(fd int) error {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mesh.SocketMark); err != nil {
		return fmt.Errorf("set SO_MARK: %w", err)
	}
	return nil
}

// ListenUDP opens a UDP socket at addr inside the namespace (the DNS
// proxy's), marked with mesh.SocketMark: its replies go to the client's
// port, which may be 53 (a resolver in the pod), and must not be captured.
func (n *nsNet) ListenUDP(network, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = markSocket(int(fd)) }); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		return ReusePort("", "", rc)
	}}
	var c net.PacketConn
	err := netns.Do(n.fd, func() error {
		var err error
		c, err = lc.ListenPacket(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s/%s in pod netns: %w", network, addr, err)
	}
	return c.(*net.UDPConn), nil
}

// DialUDP makes a UDP socket inside the namespace, marked with
// mesh.SocketMark (the DNS capture lets it through), connected to addr.
func (n *nsNet) DialUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	return netns.DialUDP(n.fd, addr, markSocket)
}
