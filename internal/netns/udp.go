package netns

import (
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
	fd, sa, err := socketIn(nsFD, addr, unix.SOCK_DGRAM, unix.IPPROTO_UDP, control)
	if err != nil {
		return nil, dialError("udp", addr, err)
	}
	if err := unix.Connect(fd, sa); err != nil { // UDP: no handshake, never EINPROGRESS
		unix.Close(fd)
		return nil, dialError("udp", addr, os.NewSyscallError("connect", err))
	}
	f := os.NewFile(uintptr(fd), "udp")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, dialError("udp", addr, err)
	}
	return c.(*net.UDPConn), nil
}
