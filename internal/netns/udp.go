package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// DialUDP makes a UDP socket inside the network namespace open at nsFD
// (only socket(2) runs there, as in DialTCP), calls control with it (to
// set SO_MARK, say) and connects it to addr. The connection is on Go's
// poller.
func DialUDP(nsFD int, addr netip.AddrPort, control func(fd int) error) (*net.UDPConn, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()})
	if addr.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	}
	var fd int
	err := Do(nsFD, func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, udpError(addr, err)
	}
	if control != nil {
		if err := control(fd); err != nil {
			unix.Close(fd)
			return nil, udpError(addr, err)
		}
	}
	if err := unix.Connect(fd, sa); err != nil { // UDP: no handshake, never EINPROGRESS
		unix.Close(fd)
		return nil, udpError(addr, os.NewSyscallError("connect", err))
	}
	f := os.NewFile(uintptr(fd), "udp")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, udpError(addr, err)
	}
	return c.(*net.UDPConn), nil
}

func udpError(addr netip.AddrPort, err error) error {
	return &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: err}
}
