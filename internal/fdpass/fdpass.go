// Package fdpass sends and receives one message with open files attached
// (SCM_RIGHTS) over a SOCK_SEQPACKET unix socket: the hand-off of pod
// network namespaces to ztunnel and the CNI plugin's requests to agentd.
package fdpass

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxFDs is how many descriptors one packet may carry before the kernel
// truncates the control message.
const maxFDs = 8

// ErrTooLarge: a packet was longer than the reader's buffer.
var ErrTooLarge = errors.New("message too large")

// Packet is one received message with the descriptors that came with it.
type Packet struct {
	Data  []byte
	Files []*os.File
}

// CloseFiles closes every descriptor in p.
func (p *Packet) CloseFiles() {
	for _, f := range p.Files {
		f.Close()
	}
	p.Files = nil
}

// Write sends data as one packet, with f attached when it is not nil.
func Write(c *net.UnixConn, data []byte, f *os.File) error {
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

// Read receives one packet of at most maxSize bytes. Received descriptors
// are always returned as files (close-on-exec) or closed, also when an
// error is returned.
func Read(c *net.UnixConn, maxSize int) (*Packet, error) {
	buf := make([]byte, maxSize)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	p := &Packet{Data: buf[:n]}
	if ferr := p.parseRights(oob[:oobn]); ferr != nil && err == nil {
		err = ferr
	}
	switch {
	case err != nil:
	case n == 0:
		err = io.EOF // SOCK_SEQPACKET: zero bytes means the peer hung up
	case flags&unix.MSG_TRUNC != 0:
		err = ErrTooLarge
	case flags&unix.MSG_CTRUNC != 0:
		err = errors.New("too many file descriptors")
	}
	if err != nil {
		p.CloseFiles()
		return nil, err
	}
	return p, nil
}

// parseRights turns SCM_RIGHTS control messages into files.
func (p *Packet) parseRights(oob []byte) error {
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
			p.Files = append(p.Files, os.NewFile(uintptr(fd), "fd"))
		}
	}
	return nil
}

// Dup duplicates f (close-on-exec) so the copy outlives the caller's.
func Dup(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("dup fd: %w", err)
	}
	var nfd int
	var derr error
	if err := sc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("dup fd: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("dup fd: %w", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// Listen creates a SOCK_SEQPACKET socket at path with mode 0600, creating
// its directory and replacing a stale socket file (nothing else).
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// removeStale removes a socket file left by an earlier run; it refuses to
// remove anything that is not a socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
