package bpf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/bpffs"
	"github.com/agentmesh/agentmesh/internal/netns"
)

// A socket belongs to the cgroup of the task that created it (an accepted
// socket to its listener's), so the accel tests have a child started in
// the test cgroup create unconnected sockets inside a netns and send them
// back over a unix socket (fd 4); the test binds, listens and connects
// them itself.
const socketsChildEnv = "AMTEST_BPF_SOCKETS" // "<4|6> <count>"

func childSockets(spec string) error {
	var family, n int
	if _, err := fmt.Sscan(spec, &family, &n); err != nil {
		return fmt.Errorf("parse %q: %w", spec, err)
	}
	// setns moves only this thread: without the lock the goroutine may
	// make its sockets on another, still in the parent's netns (CI saw
	// "bind 198.18.0.2: cannot assign requested address").
	runtime.LockOSThread() // never unlocked: the process exits
	if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	af := unix.AF_INET
	if family == 6 {
		af = unix.AF_INET6
	}
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds[i] = fd
	}
	return unix.Sendmsg(4, []byte{0}, unix.UnixRights(fds...), nil, 0)
}

// cgroupSockets returns n TCP sockets (AF_INET for family 4, else AF_INET6)
// created in netns ns by a task in cgroup cg, closed on cleanup.
func cgroupSockets(t *testing.T, cg string, ns *os.File, family, n int) []*os.File {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	theirs := os.NewFile(uintptr(pair[1]), "sockets-child")
	defer theirs.Close()
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
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d", socketsChildEnv, family, n))
	cmd.ExtraFiles = []*os.File{ns, theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil { // waits: the child is gone before cleanup
		t.Fatalf("sockets child: %v: %s", err, out)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4*n))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, 0)
	if err != nil {
		t.Fatalf("receive sockets: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != n {
		t.Fatalf("received fds %v, %v; want %d", fds, err, n)
	}
	files := make([]*os.File, n)
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "sock")
		t.Cleanup(func() { files[i].Close() })
	}
	return files
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// listenOn binds sock to addr (port 0: any) and listens.
func listenOn(t *testing.T, sock *os.File, addr string) *net.TCPListener {
	t.Helper()
	if err := unix.Bind(int(sock.Fd()), sockaddr(netip.MustParseAddrPort(addr))); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	if err := unix.Listen(int(sock.Fd()), 16); err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// connectTo connects sock to ln (from the address of the socket's family
// that ln listens on) and returns both ends.
func connectTo(t *testing.T, sock *os.File, ln *net.TCPListener) (client, server *net.TCPConn) {
	t.Helper()
	if err := unix.Connect(int(sock.Fd()), sockaddr(addrPort(ln.Addr().String()))); err != nil {
		t.Fatalf("connect to %s: %v", ln.Addr(), err)
	}
	c, err := net.FileConn(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), acceptFrom(t, ln, c.LocalAddr().String())
}

// accelEnv is a loaded datapath with the accel programs attached to a
// test cgroup and an enrolled pod netns (198.18.0.2, 198.18.0.3 and
// fd00:18::2 on lo).
type accelEnv struct {
	o   *Objects
	cg  string
	pod *os.File
}

func newAccelEnv(t *testing.T) *accelEnv {
	t.Helper()
	o := loadObjects(t)
	if err := o.LoadAccel(nil); err != nil {
		t.Fatalf("load accel: %v", err)
	}
	if err := o.AttachAccelMsg(); err != nil {
		t.Fatal(err)
	}
	e := &accelEnv{o: o, cg: newCgroup(t), pod: newNetns(t)}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: e.cg, Attach: ebpf.AttachCGroupSockOps, Program: o.Programs[ProgAccelSockOps]})
	if err != nil {
		t.Fatalf("attach %s: %v", ProgAccelSockOps, err)
	}
	t.Cleanup(func() { l.Close() })
	addAddr(t, e.pod, "lo", "198.18.0.2/32")
	addAddr(t, e.pod, "lo", "198.18.0.3/32")
	addAddr(t, e.pod, "lo", "fd00:18::2/128")
	cookie, err := netns.Cookie(int(e.pod.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Maps[MapEnrolledNetns].Put(cookie, uint8(1)); err != nil {
		t.Fatal(err)
	}
	return e
}

// pair makes a connection from src to a listener on dst (port 0: any),
// both sockets made in the test cgroup inside netns ns; the client's
// socket has mesh.SocketMark when marked (as ztunnel's delivery sockets).
func (e *accelEnv) pair(t *testing.T, ns *os.File, src, dst string, marked bool) (client, server *net.TCPConn) {
	t.Helper()
	d := netip.MustParseAddrPort(dst)
	family := 4
	if d.Addr().Is6() {
		family = 6
	}
	socks := cgroupSockets(t, e.cg, ns, family, 2)
	if marked {
		if err := unix.SetsockoptInt(int(socks[1].Fd()), unix.SOL_SOCKET, unix.SO_MARK, mesh.SocketMark); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(int(socks[1].Fd()), sockaddr(netip.AddrPortFrom(netip.MustParseAddr(src), 0))); err != nil {
		t.Fatalf("bind %s: %v", src, err)
	}
	return connectTo(t, socks[1], listenOn(t, socks[0], d.String()))
}

func (e *accelEnv) socks(t *testing.T) int {
	t.Helper()
	n := 0
	var k sockmapSockKey
	var v uint64
	it := e.o.Maps[MapAccelSocks].Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		t.Fatalf("iterate %s: %v", MapAccelSocks, err)
	}
	return n
}

func readAccelCounters(t *testing.T, o *Objects) AccelCounters {
	t.Helper()
	c, err := ReadAccelCounters(o.Maps[MapAccelStats])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func accelDiff(a, b AccelCounters) AccelCounters {
	return AccelCounters{
		AccelInserted:     b.AccelInserted - a.AccelInserted,
		AccelInsertErrors: b.AccelInsertErrors - a.AccelInsertErrors,
		AccelRedirected:   b.AccelRedirected - a.AccelRedirected,
		AccelPassed:       b.AccelPassed - a.AccelPassed,
	}
}

func TestAccelLoad(t *testing.T) {
	o := loadObjects(t)
	if err := o.LoadAccel(nil); err != nil {
		t.Fatalf("load accel: %v", err)
	}
	for _, n := range AccelProgNames {
		if o.Programs[n] == nil {
			t.Errorf("program %s not loaded", n)
		}
	}
	for _, n := range AccelMapNames {
		if o.Maps[n] == nil {
			t.Errorf("map %s not loaded", n)
		}
	}
	if err := o.CloseAccel(); err != nil {
		t.Fatal(err)
	}
	if o.Maps[MapAccelSocks] != nil || o.Maps[MapAccelStats] != nil || o.Programs[ProgAccelSkMsg] != nil || o.Maps[MapStats] == nil {
		t.Errorf("after CloseAccel: maps %v programs %v", o.Maps, o.Programs)
	}
}

func TestAccelRedirectsTowardZtunnel(t *testing.T) {
	e := newAccelEnv(t)
	for _, tt := range []struct {
		name, src, dst string
		marked         bool
	}{
		// The app's outbound leg: app -> ztunnel's 15001.
		{"v4 outbound", "127.0.0.1", "127.0.0.1:15001", false},
		{"v4 outbound other loopback address", "127.0.0.5", "127.0.0.1:15001", false},
		{"v6 outbound", "::1", "[::1]:15001", false},
		// ztunnel's delivery leg: a marked socket -> the app.
		{"v4 delivery", "127.0.0.1", "127.0.0.1:0", true},
		{"v4 delivery to the pod address", "198.18.0.2", "198.18.0.2:0", true},
		{"v6 delivery to the pod address", "fd00:18::2", "[fd00:18::2]:0", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := readAccelCounters(t, e.o)
			c, s := e.pair(t, e.pod, tt.src, tt.dst, tt.marked)
			if d := accelDiff(before, readAccelCounters(t, e.o)); d != (AccelCounters{AccelInserted: 2}) {
				t.Fatalf("counter deltas after connect = %+v, want 2 inserted", d)
			}
			app, zt := c, s
			if tt.marked {
				app, zt = s, c
			}
			// Only the app's messages are redirected: count them.
			before = readAccelCounters(t, e.o)
			echo(t, app, zt, []byte("ping"))
			echo(t, zt, app, []byte("pong"))
			if d := accelDiff(before, readAccelCounters(t, e.o)); d != (AccelCounters{AccelRedirected: 1}) {
				t.Errorf("counter deltas of one echo each way = %+v, want 1 redirected", d)
			}
			exchange(t, c, s)
			d := accelDiff(before, readAccelCounters(t, e.o))
			if d.AccelRedirected < 5000 || d.AccelPassed != 0 || d.AccelInsertErrors != 0 {
				t.Errorf("counter deltas = %+v, want redirected only", d)
			}
		})
	}
	// Closed sockets leave the map.
	waitFor(t, "accel_socks empty", func() bool { return e.socks(t) == 0 })
}

// exchange checks a connection both ways: echoes, many small framed
// messages, a large transfer each way at once with a checksum, and
// half-close: EOF after the last byte while the other direction goes on.
func exchange(t *testing.T, c, s *net.TCPConn) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	for range 3 {
		echo(t, c, s, []byte("ping"))
		echo(t, s, c, []byte("pong"))
	}
	manySmall(t, c, s, 5000)
	manySmall(t, s, c, 5000)
	errs := make(chan error, 2)
	go func() { errs <- bulk(c, s, 32<<20, 1) }()
	go func() { errs <- bulk(s, c, 32<<20, 2) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	halfClose(t, c, s)
}

func echo(t *testing.T, from, to *net.TCPConn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
}

// manySmall sends n length-prefixed messages of 1..200 bytes, one write
// each, and checks every one arrives in order.
func manySmall(t *testing.T, from, to *net.TCPConn, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	msgs := make([][]byte, n)
	for i := range msgs {
		m := make([]byte, 4+1+rng.IntN(200))
		binary.BigEndian.PutUint32(m, uint32(i))
		for j := 4; j < len(m); j++ {
			m[j] = byte(i + j)
		}
		msgs[i] = m
	}
	errc := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			hdr := []byte{byte(len(m))}
			if _, err := from.Write(append(hdr, m...)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	r := bufio.NewReader(to)
	for i, want := range msgs {
		l, err := r.ReadByte()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		got := make([]byte, l)
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d = %x, %v; want %x", i, got, err, want)
		}
	}
	if r.Buffered() != 0 {
		t.Fatalf("%d bytes after the last message", r.Buffered())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// bulk sends n pseudo-random bytes (seeded) in writes of varying size and
// compares checksums.
func bulk(from, to *net.TCPConn, n int64, seed uint64) error {
	sent := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		rng := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 256<<10)
		for left := n; left > 0; {
			k := min(left, int64(1+rng.IntN(len(buf))))
			for i := range buf[:k] {
				buf[i] = byte(rng.Uint32())
			}
			h.Write(buf[:k])
			if _, err := from.Write(buf[:k]); err != nil {
				sent <- nil
				return
			}
			left -= k
		}
		sent <- h.Sum(nil)
	}()
	h := sha256.New()
	got, err := io.CopyN(h, to, n)
	want := <-sent
	if err != nil || want == nil {
		return fmt.Errorf("bulk %d bytes: received %d: %w (sender done: %t)", n, got, err, want != nil)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("bulk %d bytes: checksum mismatch", n)
	}
	return nil
}

// halfClose: c sends and shuts down writing; s reads everything and then
// EOF, and still answers; c reads the answer and then EOF once s closes.
func halfClose(t *testing.T, c, s *net.TCPConn) {
	t.Helper()
	if _, err := c.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "last words" {
		t.Fatalf("server read %q, %v; want %q then EOF", got, err, "last words")
	}
	if _, err := s.Write([]byte("reply after EOF")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(c)
	if err != nil || string(got) != "reply after EOF" {
		t.Fatalf("client read %q, %v; want %q then EOF", got, err, "reply after EOF")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestAccelLeavesOthersAlone(t *testing.T) {
	e := newAccelEnv(t)
	for _, tt := range []struct {
		name, src, dst string
		marked         bool
		ns             func() *os.File
		want           AccelCounters
	}{
		{"pod address to another", "198.18.0.2", "198.18.0.3:15001", false, func() *os.File { return e.pod }, AccelCounters{}},
		{"netns not enrolled", "127.0.0.1", "127.0.0.1:15001", false, func() *os.File { return newNetns(t) }, AccelCounters{}},
		// Both inserted, neither is ztunnel's: nothing redirected.
		{"app to app", "127.0.0.1", "127.0.0.1:0", false, func() *os.File { return e.pod }, AccelCounters{AccelInserted: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := readAccelCounters(t, e.o)
			c, s := e.pair(t, tt.ns(), tt.src, tt.dst, tt.marked)
			exchange(t, c, s)
			d := accelDiff(before, readAccelCounters(t, e.o))
			if d.AccelPassed > 0 {
				d.AccelPassed = 0 // app to app: each sender found no ztunnel peer
			}
			if d != tt.want {
				t.Errorf("counter deltas = %+v, want %+v", d, tt.want)
			}
		})
	}
	t.Run("ztunnel outside the cgroup", func(t *testing.T) {
		// ztunnel's listener is the test's own, so the accepted socket is
		// not in the cgroup: only the app is inserted, and it sends over
		// TCP.
		before := readAccelCounters(t, e.o)
		ln := listen(t, e.pod, "tcp4", "127.0.0.1:15001")
		c, s := connectTo(t, cgroupSockets(t, e.cg, e.pod, 4, 1)[0], ln)
		exchange(t, c, s)
		d := accelDiff(before, readAccelCounters(t, e.o))
		if d.AccelInserted != 1 || d.AccelRedirected != 0 || d.AccelPassed == 0 || d.AccelInsertErrors != 0 {
			t.Errorf("counter deltas = %+v, want 1 inserted and passed only", d)
		}
	})
}

// TestAccelAppSplices has the app relay between its two accelerated
// sockets with io.Copy, which splices: the app only ever receives over
// TCP (splice(2) does not see redirected bytes), so every byte arrives.
//
//	ztunnel zo <-> app a ==splice== app s <-> ztunnel zd (marked)
func TestAccelAppSplices(t *testing.T) {
	e := newAccelEnv(t)
	before := readAccelCounters(t, e.o)
	a, zo := e.pair(t, e.pod, "127.0.0.1", "127.0.0.1:15001", false)
	zd, s := e.pair(t, e.pod, "198.18.0.2", "198.18.0.2:0", true)
	deadline := time.Now().Add(30 * time.Second)
	for _, x := range []*net.TCPConn{a, zo, zd, s} {
		x.SetDeadline(deadline)
	}
	done := make(chan error, 2)
	relay := func(dst, src *net.TCPConn) {
		_, err := io.Copy(dst, src) // *TCPConn.ReadFrom: splice(2)
		done <- errors.Join(err, dst.CloseWrite())
	}
	go relay(a, s)
	go relay(s, a)
	errs := make(chan error, 2)
	go func() { errs <- bulk(zo, zd, 16<<20, 3) }()
	go func() { errs <- bulk(zd, zo, 16<<20, 4) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	zo.CloseWrite()
	zd.CloseWrite()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if d := accelDiff(before, readAccelCounters(t, e.o)); d.AccelRedirected == 0 || d.AccelPassed != 0 {
		t.Errorf("counter deltas = %+v, want redirected only", d)
	}
}

func TestAccelProbe(t *testing.T) {
	e := newAccelEnv(t)
	if _, err := bpffs.Ensure(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(bpffs.Path, "amtest-accel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := NewAccelProbe(dir)
	defer p.Close()
	app, zt := e.pair(t, e.pod, "127.0.0.1", "127.0.0.1:15001", false)
	zd, _ := e.pair(t, e.pod, "198.18.0.2", "198.18.0.2:0", true)
	if p.Accelerated(zt) {
		t.Error("accelerated without a pin")
	}
	if err := os.MkdirAll(filepath.Join(dir, MapsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.o.Maps[MapAccelSocks].Pin(MapPin(dir, MapAccelSocks)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.o.Maps[MapAccelSocks].Unpin() })
	for _, tt := range []struct {
		name string
		c    *net.TCPConn
		want bool
	}{{"ztunnel outbound", zt, true}, {"ztunnel delivery", zd, true}, {"app", app, false}} {
		if got := p.Accelerated(tt.c); got != tt.want {
			t.Errorf("%s: Accelerated = %t, want %t", tt.name, got, tt.want)
		}
	}
	if err := e.o.Maps[MapAccelSocks].Unpin(); err != nil {
		t.Fatal(err)
	}
	if p.Accelerated(zt) {
		t.Error("accelerated after unpin")
	}
}
