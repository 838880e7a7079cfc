package bpf

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The connect tests need the connecting socket to belong to a task in the
// test cgroup, so they re-execute the test binary as a child started in
// that cgroup (clone3 CLONE_INTO_CGROUP). The child joins the netns passed
// as fd 3, connects once and prints its local address.
const childEnv = "AMTEST_BPF_CONNECT" // "<tcp4|tcp6> <dst addr:port> <mark 0|1>"

func TestMain(m *testing.M) {
	if spec := os.Getenv(dnsChildEnv); spec != "" {
		if err := childDNS(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(socketsChildEnv); spec != "" {
		if err := childSockets(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(childEnv); spec != "" {
		if err := childConnect(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childConnect(spec string) error {
	var network, dst, mark string
	if _, err := fmt.Sscan(spec, &network, &dst, &mark); err != nil {
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
	if network == "tcp4" {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if m, _ := strconv.Atoi(mark); m != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, m); err != nil {
			return fmt.Errorf("SO_MARK: %w", err)
		}
	}
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect %s: %w", dst, err)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	fmt.Println(sockaddrString(local))
	return nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprint(sa)
}

// connectFrom runs a child in cgroup cg and netns ns that connects to dst
// and returns the child's local address (as the peer sees it).
// connectFrom connects from a child in cgroup cg and netns ns, its socket
// with SO_MARK mark (0: none).
func connectFrom(t *testing.T, cg string, ns *os.File, network, dst string, mark int) netip.AddrPort {
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
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", childEnv, network, dst, strconv.Itoa(mark)))
	cmd.ExtraFiles = []*os.File{ns}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output() // waits: the child is gone before cleanup
	if err != nil {
		t.Fatalf("child connect %s %s: %v: %s", network, dst, err, stderr.String())
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
