package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// maxFDs is how many descriptors one packet may carry before the kernel
// truncates the control message; every add carries exactly one.
const maxFDs = 8

// packet is one received message with the descriptors that came with it.
type packet struct {
	data  []byte
	files []*os.File
}

// closeFiles closes every descriptor in p.
func (p *packet) closeFiles() {
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
}

// writePacket sends data as one packet, with f attached when it is not nil.
func writePacket(c *net.UnixConn, data []byte, f *os.File) error {
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	n, oobn, err := c.WriteMsgUnix(data, oob, nil)
	if err != nil {
		return fmt.Errorf("send packet: %w", err)
	}
	if n != len(data) || oobn != len(oob) {
		return errors.New("send packet: short write")
	}
	return nil
}

// readPacket receives one packet. Received descriptors are always returned
// as files (close-on-exec) or closed, also when an error is returned.
func readPacket(c *net.UnixConn) (*packet, error) {
	buf := make([]byte, maxMessageSize)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	p := &packet{data: buf[:n]}
	if ferr := p.parseRights(oob[:oobn]); ferr != nil && err == nil {
		err = ferr
	}
	switch {
	case err != nil:
	case n == 0:
		err = io.EOF // SOCK_SEQPACKET: zero bytes means the peer hung up
	case flags&unix.MSG_TRUNC != 0:
		err = errTooLarge
	case flags&unix.MSG_CTRUNC != 0:
		err = errors.New("too many file descriptors")
	}
	if err != nil {
		p.closeFiles()
		return nil, err
	}
	return p, nil
}

// parseRights turns SCM_RIGHTS control messages into files.
func (p *packet) parseRights(oob []byte) error {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("parse control message: %w", err)
	}
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS
		}
		for _, fd := range fds {
			p.files = append(p.files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return nil
}

// dupFile duplicates f (close-on-exec) so the copy outlives the caller's.
func dupFile(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("dup netns fd: %w", err)
	}
	var nfd int
	var derr error
	if err := sc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("dup netns fd: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("dup netns fd: %w", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
