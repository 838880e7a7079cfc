package netns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// listenIn listens on addr inside ns.
func listenIn(t *testing.T, ns *os.File, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(int(ns.Fd()), func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestDialTCP(t *testing.T) {
	ns := testutil.NewNetns(t)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln := listenIn(t, ns, addr) // reachable only from inside ns
		target := ln.Addr().(*net.TCPAddr).AddrPort()
		marked := false
		c, err := netns.DialTCP(context.Background(), int(ns.Fd()), target, func(fd int) error {
			marked = true
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, 0x539)
		})
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != target {
			t.Errorf("remote addr %s, want %s", got, target)
		}
		if c.LocalAddr().String() != s.RemoteAddr().String() {
			t.Errorf("local addr %s, server saw %s", c.LocalAddr(), s.RemoteAddr())
		}
		rc, _ := c.SyscallConn()
		var mark int
		rc.Control(func(fd uintptr) { mark, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
		if !marked || mark != 0x539 {
			t.Errorf("control ran %v, SO_MARK %#x; want 0x539", marked, mark)
		}
		c.Write([]byte("hi"))
		buf := make([]byte, 2)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(buf); err != nil || string(buf) != "hi" {
			t.Errorf("server read %q, %v", buf, err)
		}
		c.Close()
		s.Close()
	}
	// Nothing listens there: refused, in net.Dialer's words.
	_, err := netns.DialTCP(context.Background(), int(ns.Fd()), netip.MustParseAddrPort("127.0.0.1:1"), nil)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "dial tcp 127.0.0.1:1: connect: connection refused") {
		t.Errorf("dial a closed port: %v", err)
	}
}

// blackhole returns a namespace with an address whose SYNs go nowhere (a
// veth with its peer down and a permanent neighbour entry), so a connect to
// it hangs.
func blackhole(t *testing.T) (*os.File, netip.AddrPort) {
	ns := testutil.NewNetns(t)
	err := netns.Do(int(ns.Fd()), func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hole0"}, PeerName: "hole1"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("10.99.0.1/24")
		if err := netlink.AddrAdd(v, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(v); err != nil {
			return err
		}
		mac, _ := net.ParseMAC("02:00:00:00:00:02")
		return netlink.NeighAdd(&netlink.Neigh{LinkIndex: v.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("10.99.0.2"), HardwareAddr: mac})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns, netip.MustParseAddrPort("10.99.0.2:80")
}

func TestDialTCPContext(t *testing.T) {
	ns, hole := blackhole(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := netns.DialTCP(ctx, int(ns.Fd()), hole, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dial with a deadline: %v, want a timeout", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = netns.DialTCP(ctx, int(ns.Fd()), hole, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("dial canceled: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two bounded dials took %v", d)
	}
}

// threads is this process's OS thread count.
func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads in /proc/self/status")
	return 0
}

// TestDialTCPHoldsNoThread: many connects in flight at once do not each
// hold an OS thread (a dial inside netns.Do would).
func TestDialTCPHoldsNoThread(t *testing.T) {
	ns, hole := blackhole(t)
	const dials = 300
	before := threads(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range dials {
		wg.Go(func() { netns.DialTCP(ctx, int(ns.Fd()), hole, nil) })
	}
	time.Sleep(300 * time.Millisecond) // every dial is waiting on its connect
	during := threads(t)
	cancel()
	wg.Wait()
	if grew := during - before; grew > dials/4 {
		t.Errorf("%d connects in flight grew the process by %d threads", dials, grew)
	}
	t.Logf("%d connects in flight: threads %d -> %d", dials, before, during)
}
