package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// errMPTCP: Go listeners use MPTCP by default since Go 1.24, and MPTCP
// sockets cannot be put into a SOCKHASH.
var errMPTCP = errors.New("listener is MPTCP; use net.ListenConfig.SetMultipathTCP(false)")

func listenerKey(podIP netip.Addr, port uint16) steerListenerKey {
	return steerListenerKey{Addr: podIP.As16(), Port: port}
}

// PutListener makes ln (a listening TCP socket inside the pod's netns, for
// a pod IPv6 address an AF_INET6 one) the target of sk_lookup for podIP and
// port (mesh.InboundPlaintextPort or mesh.HBONEPort). The map holds its own
// reference to the socket; ln may be closed afterwards without effect on
// the entry, which lives until DeleteListener or the socket is closed
// everywhere. ln must be plain TCP, not MPTCP (Go's default for listeners
// since Go 1.24): make it with net.ListenConfig.SetMultipathTCP(false).
func PutListener(m *ebpf.Map, podIP netip.Addr, port uint16, ln syscall.Conn) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("put listener %s: %w", netip.AddrPortFrom(podIP, port), err)
	}
	key := listenerKey(podIP, port)
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		if proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
			uerr = errMPTCP
			return
		}
		uerr = m.Update(&key, uint64(fd), ebpf.UpdateAny)
	}); err != nil {
		uerr = err
	}
	if uerr != nil {
		return fmt.Errorf("put listener %s: %w", netip.AddrPortFrom(podIP, port), uerr)
	}
	return nil
}

// DeleteListener removes the listener of podIP and port. Deleting an
// absent entry is not an error.
func DeleteListener(m *ebpf.Map, podIP netip.Addr, port uint16) error {
	key := listenerKey(podIP, port)
	if err := m.Delete(&key); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete listener %s: %w", netip.AddrPortFrom(podIP, port), err)
	}
	return nil
}
