package podnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// fakeDeliveries records what the real map would hold; taken makes the
// next Puts of those four-tuples fail as recorded already.
type fakeDeliveries struct {
	mu      sync.Mutex
	live    map[[2]netip.AddrPort]bool
	puts    []netip.AddrPort // callers, in order
	deletes int
	taken   int // this many Puts fail with bpf.ErrDeliveryTaken first
}

func (f *fakeDeliveries) Put(app, caller netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, caller)
	if f.taken > 0 {
		f.taken--
		return fmt.Errorf("put: %w", bpf.ErrDeliveryTaken)
	}
	f.live[[2]netip.AddrPort{app, caller}] = true
	return nil
}

func (f *fakeDeliveries) Delete(app, caller netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	delete(f.live, [2]netip.AddrPort{app, caller})
	return nil
}

// has reports whether a delivery from caller to app is recorded.
func (f *fakeDeliveries) has(app, caller netip.AddrPort) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[[2]netip.AddrPort{app, caller}]
}

// podNetns is a netns with a pod's addresses on eth0 (a veth whose peer
// stays in the netns) and default routes out of it: without the delivery
// rule, the app's replies to a caller would leave by eth0.
func podNetns(t *testing.T, addrs ...string) *os.File {
	t.Helper()
	ns := testutil.NewNetns(t)
	err := netns.Do(int(ns.Fd()), func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
			return err
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			addr.Flags = 0x02 // IFA_F_NODAD
			if err := netlink.AddrAdd(eth, addr); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		for _, dst := range []string{"0.0.0.0/0", "::/0"} {
			_, d, _ := net.ParseCIDR(dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: d}); err != nil {
				return fmt.Errorf("route %s: %w", dst, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pod netns: %v", err)
	}
	return ns
}

// TestDialFromCaller: in a real netns, a delivery comes from the caller's
// address (IPv4 and IPv6): the app's accept sees it, the echo comes back,
// and the four-tuple was recorded while connecting and is gone after. A
// loopback caller or a family that differs is delivered from the pod's
// own address, as without Deliveries. A mesh caller's delivery takes a
// port of the ephemeral range; one for a caller from outside the mesh a
// port below it, never the caller's own.
func TestDialFromCaller(t *testing.T) {
	ns := podNetns(t, "10.99.0.2/24", "fd00:99::2/64")
	table := &fakeDeliveries{live: map[[2]netip.AddrPort]bool{}}
	dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Netns{Log: testutil.TLogger(t, 0), Deliveries: table}.Open(handoff.Pod{UID: "u", Name: "p", Namespace: "ns"}, dup)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, tc := range []struct {
		name       string
		app        string
		caller     string
		wantCaller bool
	}{
		{"ipv4", "10.99.0.2:8080", "198.51.100.7:0", true},
		{"ipv6", "[fd00:99::2]:8080", "[2001:db8::7]:0", true},
		{"v4-mapped caller", "10.99.0.2:8081", "[::ffff:198.51.100.8]:0", true},
		{"loopback caller", "10.99.0.2:8082", "127.0.0.1:0", false},
		{"other family", "10.99.0.2:8083", "[2001:db8::7]:0", false},
		{"ipv4 from outside the mesh", "10.99.0.2:8084", "198.51.100.9:41000", true},
		{"ipv6 from outside the mesh", "[fd00:99::2]:8084", "[2001:db8::9]:41000", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := netip.MustParseAddrPort(tc.app)
			caller := netip.MustParseAddrPort(tc.caller)
			ln, err := n.Listen("tcp", app.String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peers := make(chan netip.AddrPort, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					close(peers)
					return
				}
				defer c.Close()
				peers <- netaddr.AddrPort(c.RemoteAddr())
				io.Copy(c, c) //nolint:errcheck // echo until the client closes
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := n.DialFrom(ctx, caller, app)
			if err != nil {
				t.Fatalf("DialFrom(%s, %s): %v", caller, app, err)
			}
			defer c.Close()
			peer := <-peers
			want := caller.Addr().Unmap()
			if !tc.wantCaller {
				want = app.Addr()
			}
			if peer.Addr() != want {
				t.Errorf("the app saw the connection from %s, want %s", peer.Addr(), want)
			}
			if tc.wantCaller && caller.Port() == 0 && (peer.Port() < 32768 || peer.Port() > 60999) {
				t.Errorf("a mesh caller's delivery from port %d, want one of the ephemeral range 32768-60999", peer.Port())
			}
			if caller.Port() != 0 && (peer.Port() < 1024 || peer.Port() >= 32768 || peer.Port() == caller.Port()) {
				t.Errorf("a delivery for %s (outside the mesh) from port %d, want one in 1024-32767, not the caller's", caller, peer.Port())
			}
			if got := netaddr.AddrPort(c.LocalAddr()); got != peer {
				t.Errorf("ztunnel's end is %s, the app's peer %s", got, peer)
			}
			if table.has(app, peer) {
				t.Errorf("the delivery %s -> %s is still recorded; want it deleted when connect returns", peer, app)
			}
			if tc.wantCaller && !slices.Contains(table.puts, peer) {
				t.Errorf("the delivery from %s was not recorded before connecting (recorded: %v)", peer, table.puts)
			}
			// The app's replies reach ztunnel's socket, not eth0.
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Errorf("echo: %q, %v", buf, err)
			}
		})
	}
}

// TestDialFromCallerTakenPort: a four-tuple another delivery holds is
// skipped for the next port.
func TestDialFromCallerTakenPort(t *testing.T) {
	ns := podNetns(t, "10.99.0.2/24")
	table := &fakeDeliveries{live: map[[2]netip.AddrPort]bool{}, taken: 3}
	n, err := Netns{Deliveries: table}.Open(handoff.Pod{UID: "u"}, ns)
	if err != nil {
		t.Fatal(err)
	}
	app := netip.MustParseAddrPort("10.99.0.2:8080")
	ln, err := n.Listen("tcp", app.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.DialFrom(ctx, netip.MustParseAddrPort("198.51.100.7:0"), app)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(table.puts) != 4 || len(map[netip.AddrPort]bool{table.puts[0]: true, table.puts[1]: true, table.puts[2]: true, table.puts[3]: true}) != 4 {
		t.Errorf("tried %v; want 4 different ports (3 taken)", table.puts)
	}
	if got := netaddr.AddrPort(c.LocalAddr()); got != table.puts[3] {
		t.Errorf("connected from %s, want the fourth port tried %s", got, table.puts[3])
	}
}

// TestOpenFromCallerIdempotent: opening a netns twice (a ztunnel restart)
// keeps one rule per family.
func TestOpenFromCallerIdempotent(t *testing.T) {
	ns := podNetns(t, "10.99.0.2/24", "fd00:99::2/64")
	for range 2 {
		dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		n, err := Netns{Deliveries: &fakeDeliveries{live: map[[2]netip.AddrPort]bool{}}}.Open(handoff.Pod{UID: "u"}, dup)
		if err != nil {
			t.Fatal(err)
		}
		if n.(*nsNet).from == nil {
			t.Fatal("Open did not set up deliveries from the caller")
		}
		n.Close()
	}
	h, err := netlink.NewHandleAt(vnetnsHandle(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(fam)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rules {
			if r.Table == mesh.DeliveryRouteTable {
				n++
			}
		}
		if n != 1 {
			t.Errorf("family %d: %d delivery rules after two opens, want 1", fam, n)
		}
	}
}

func vnetnsHandle(f *os.File) vnetns.NsHandle { return vnetns.NsHandle(f.Fd()) }

// TestDirectPortSkipsTheCallers: the round robin of ports for callers
// from outside the mesh steps over the port of the connection being
// delivered (its four-tuple is held by the steered socket), stays below
// the ephemeral range, and a netns whose ephemeral range leaves too few
// ports below it delivers such callers from the pod's own address.
func TestDirectPortSkipsTheCallers(t *testing.T) {
	d := &fromCaller{v4: true, lo: 32768, n: 28232, directN: 32768 - directLo}
	caller := netip.MustParseAddrPort("198.51.100.9:5000")
	d.directNext.Store(5000 - directLo - 1) // the next port would be 5000
	if p := d.port(caller); p != 5001 {
		t.Errorf("port = %d, want 5001 (5000 is the caller's)", p)
	}
	for range 2 * d.directN {
		if p := d.port(caller); p < directLo || p >= 32768 || p == 5000 {
			t.Fatalf("port %d: want 1024-32767 without the caller's 5000", p)
		}
	}
	app := netip.MustParseAddr("10.99.0.2")
	if !d.usable(caller, app) || !d.usable(netip.AddrPortFrom(caller.Addr(), 0), app) {
		t.Error("not usable with a direct range")
	}
	d.directN = 0
	if d.usable(caller, app) {
		t.Error("a caller from outside the mesh usable without a direct range")
	}
	if !d.usable(netip.AddrPortFrom(caller.Addr(), 0), app) {
		t.Error("a mesh caller not usable without a direct range")
	}
}
