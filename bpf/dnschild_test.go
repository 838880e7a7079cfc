package bpf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// The DNS tests' child (see childEnv): it joins the netns passed as fd 3,
// sends one datagram to the upstream (after connect, or with sendto),
// waits for one reply and prints what the app saw as JSON (dnsSeen).
const dnsChildEnv = "AMTEST_BPF_DNS" // "<udp4|udp6> <connect|sendto> <upstream addr:port> <mark 0|1>"

// dnsSeen is what the child app saw.
type dnsSeen struct {
	Local string `json:"local"` // its address after the send
	From  string `json:"from"`  // the reply's source (recvfrom)
	Peer  string `json:"peer"`  // getpeername ("" when unconnected)
	Reply string `json:"reply"` // the reply's payload
}

func childDNS(spec string) error {
	var network, how, dst, mark string
	if _, err := fmt.Sscan(spec, &network, &how, &dst, &mark); err != nil {
		return fmt.Errorf("parse %q: %w", spec, err)
	}
	runtime.LockOSThread() // never unlocked: the process exits
	if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	ap, err := netip.ParseAddrPort(dst)
	if err != nil {
		return err
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())})
	if network == "udp4" {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	if mark == "1" {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, mesh.SocketMark); err != nil {
			return fmt.Errorf("SO_MARK: %w", err)
		}
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return err
	}
	var seen dnsSeen
	if how == "connect" {
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect %s: %w", dst, err)
		}
		if err := unix.Send(fd, []byte("query"), 0); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			return fmt.Errorf("getpeername: %w", err)
		}
		seen.Peer = sockaddrString(peer)
	} else if err := unix.Sendto(fd, []byte("query"), 0, sa); err != nil {
		return fmt.Errorf("sendto %s: %w", dst, err)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	seen.Local = sockaddrString(local)
	buf := make([]byte, 512)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("recvfrom: %w", err)
	}
	seen.From, seen.Reply = sockaddrString(from), string(buf[:n])
	return json.NewEncoder(os.Stdout).Encode(seen)
}

// queryFrom runs the DNS child in cgroup cg and netns ns.
func queryFrom(t *testing.T, cg string, ns *os.File, network, how, dst string, mark bool) dnsSeen {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", dnsChildEnv, network, how, dst, btoi(mark)))
	cmd.ExtraFiles = []*os.File{ns}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output() // waits: the child is gone before cleanup
	if err != nil {
		t.Fatalf("dns child %s %s %s: %v: %s", network, how, dst, err, stderr.String())
	}
	var s dnsSeen
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("dns child output %q: %v", out, err)
	}
	return s
}
