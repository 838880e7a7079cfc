package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// vethPair joins pod (veth0: 198.18.0.1, fd00:18::1) and client (veth1:
// 198.18.0.2, fd00:18::2).
func vethPair(t *testing.T, pod, client *os.File) {
	t.Helper()
	inNetns(t, pod, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"},
			PeerName: "veth1", PeerNamespace: netlink.NsFd(client.Fd())})
	})
	addAddr(t, pod, "veth0", "198.18.0.1/24")
	addAddr(t, pod, "veth0", "fd00:18::1/64")
	addAddr(t, client, "veth1", "198.18.0.2/24")
	addAddr(t, client, "veth1", "fd00:18::2/64")
}

func dialFrom(t *testing.T, ns *os.File, addr string) (net.Conn, error) {
	return dialFromBound(t, ns, "", addr)
}

// dialFromBound dials addr from ns with local address bind ("" = any).
func dialFromBound(t *testing.T, ns *os.File, bind, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: 5 * time.Second}
	if bind != "" {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(bind), 0))
	}
	inNetns(t, ns, func() error {
		c, err = d.Dial("tcp", addr)
		return nil
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestSkLookup(t *testing.T) {
	o := loadObjects(t)
	pod, client := newNetns(t), newNetns(t)
	vethPair(t, pod, client)
	l, err := link.AttachNetNs(int(pod.Fd()), o.Programs[ProgSkLookup])
	if err != nil {
		t.Fatalf("attach sk_lookup: %v", err)
	}
	t.Cleanup(func() { l.Close() })

	plain := listen(t, pod, "tcp", ":15006") // dual-stack
	hbone := listen(t, pod, "tcp", ":15008")
	app := listen(t, pod, "tcp", ":8080")
	ls := o.Maps[MapListeners]
	for _, ip := range []string{"198.18.0.1", "fd00:18::1"} {
		for port, ln := range map[uint16]*net.TCPListener{15006: plain, 15008: hbone} {
			if err := PutListener(ls, netip.MustParseAddr(ip), port, ln); err != nil {
				t.Fatal(err)
			}
		}
	}

	tests := []struct {
		name  string
		from  *os.File
		bind  string
		dst   string
		lands *net.TCPListener
		want  Counters
	}{
		{"v4 app port to plaintext", client, "", "198.18.0.1:8080", plain, Counters{LookupSteered: 1}},
		{"v6 app port to plaintext", client, "", "[fd00:18::1]:8080", plain, Counters{LookupSteered: 1}},
		{"v4 hbone", client, "", "198.18.0.1:15008", hbone, Counters{LookupSteered: 1}},
		{"v6 hbone", client, "", "[fd00:18::1]:15008", hbone, Counters{LookupSteered: 1}},
		{"v4 plaintext port itself", client, "", "198.18.0.1:15006", plain, Counters{LookupSteered: 1}},
		{"inside pod to own ip passes", pod, "", "198.18.0.1:8080", app, Counters{}},
		{"inside pod v6 own ip passes", pod, "", "[fd00:18::1]:8080", app, Counters{}},
		{"loopback passes", pod, "", "127.0.0.1:8080", app, Counters{}},
		{"inside pod from loopback source passes", pod, "127.0.0.1", "198.18.0.1:8080", app, Counters{}},
		// A pod calling itself through the mesh: ztunnel's HBONE
		// connection to the pod's own address is steered, as from outside.
		{"inside pod to own hbone port steered", pod, "", "198.18.0.1:15008", hbone, Counters{LookupSteered: 1}},
		{"inside pod to own v6 hbone port steered", pod, "", "[fd00:18::1]:15008", hbone, Counters{LookupSteered: 1}},
		{"loopback hbone port passes", pod, "", "127.0.0.1:15008", hbone, Counters{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readCounters(t, o)
			c, err := dialFromBound(t, tt.from, tt.bind, tt.dst)
			if err != nil {
				t.Fatalf("dial %s: %v", tt.dst, err)
			}
			acceptFrom(t, tt.lands, c.LocalAddr().String())
			if d := diff(before, readCounters(t, o)); d != tt.want {
				t.Errorf("counter deltas = %+v, want %+v", d, tt.want)
			}
		})
	}

	// ztunnel registers its pod's one socket for both ports.
	t.Run("one socket for both ports", func(t *testing.T) {
		if err := PutListener(ls, netip.MustParseAddr("198.18.0.1"), 15008, plain); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { PutListener(ls, netip.MustParseAddr("198.18.0.1"), 15008, hbone) })
		for _, dst := range []string{"198.18.0.1:15008", "198.18.0.1:8080"} {
			c, err := dialFrom(t, client, dst)
			if err != nil {
				t.Fatalf("dial %s: %v", dst, err)
			}
			acceptFrom(t, plain, c.LocalAddr().String())
		}
	})

	t.Run("no listener refuses", func(t *testing.T) {
		if err := DeleteListener(ls, netip.MustParseAddr("198.18.0.1"), 15006); err != nil {
			t.Fatal(err)
		}
		if err := DeleteListener(ls, netip.MustParseAddr("198.18.0.1"), 15006); err != nil {
			t.Errorf("second delete: %v", err)
		}
		before := readCounters(t, o)
		if _, err := dialFrom(t, client, "198.18.0.1:8080"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial without listener: %v, want connection refused", err)
		}
		if d := diff(before, readCounters(t, o)); d != (Counters{LookupDropped: 1}) {
			t.Errorf("counter deltas = %+v, want one drop", d)
		}
		c, err := dialFrom(t, client, "198.18.0.1:15008") // other entries unaffected
		if err != nil {
			t.Fatal(err)
		}
		acceptFrom(t, hbone, c.LocalAddr().String())
	})
}

func TestPutListenerRejectsMPTCP(t *testing.T) {
	o := loadObjects(t)
	ns := newNetns(t)
	var ln net.Listener
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	inNetns(t, ns, func() (err error) {
		ln, err = lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		return err
	})
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	proto := 0
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if proto != unix.IPPROTO_MPTCP {
		t.Skip("kernel gave a plain TCP listener (MPTCP off)")
	}
	err := PutListener(o.Maps[MapListeners], netip.MustParseAddr("198.18.0.1"), 15006, ln.(*net.TCPListener))
	if !errors.Is(err, errMPTCP) {
		t.Errorf("put MPTCP listener: %v, want errMPTCP", err)
	}
}

// TestSkLookupPassesDeliveries: a connection made inside the pod netns
// from a foreign address (ztunnel delivering from the caller's address)
// reaches the app when its four-tuple is recorded in deliveries, and is
// steered to ztunnel like any connection from outside when it is not.
func TestSkLookupPassesDeliveries(t *testing.T) {
	o := loadObjects(t)
	pod, client := newNetns(t), newNetns(t)
	vethPair(t, pod, client)
	l, err := link.AttachNetNs(int(pod.Fd()), o.Programs[ProgSkLookup])
	if err != nil {
		t.Fatalf("attach sk_lookup: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	// The app's replies to the foreign address stay in the netns (what
	// ztunnel's podnet sets up).
	inNetns(t, pod, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_fwmark_accept", []byte("1"), 0); err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, fam := range []struct {
			family int
			dst    string
		}{{netlink.FAMILY_V4, "0.0.0.0/0"}, {netlink.FAMILY_V6, "::/0"}} {
			_, dst, _ := net.ParseCIDR(fam.dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Table: mesh.DeliveryMark,
				Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}); err != nil {
				return err
			}
			r := netlink.NewRule()
			r.Family, r.Table, r.Mark, r.Priority = fam.family, mesh.DeliveryMark, mesh.DeliveryMark, 100
			if err := netlink.RuleAdd(r); err != nil {
				return err
			}
		}
		return nil
	})
	plain := listen(t, pod, "tcp", ":15006")
	app := listen(t, pod, "tcp", ":8080")
	for _, ip := range []string{"198.18.0.1", "fd00:18::1"} {
		if err := PutListener(o.Maps[MapListeners], netip.MustParseAddr(ip), 15006, plain); err != nil {
			t.Fatal(err)
		}
	}
	m := o.Maps[MapDeliveries]
	for _, tt := range []struct {
		name     string
		app      string
		caller   string
		recorded bool
		lands    *net.TCPListener
		want     Counters
	}{
		{"v4 recorded delivery reaches the app", "198.18.0.1:8080", "203.0.113.9:40001", true, app, Counters{}},
		{"v6 recorded delivery reaches the app", "[fd00:18::1]:8080", "[2001:db8::9]:40001", true, app, Counters{}},
		{"v4 unrecorded is steered", "198.18.0.1:8080", "203.0.113.9:40002", false, plain, Counters{LookupSteered: 1}},
		{"v6 unrecorded is steered", "[fd00:18::1]:8080", "[2001:db8::9]:40002", false, plain, Counters{LookupSteered: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			appAddr, caller := netip.MustParseAddrPort(tt.app), netip.MustParseAddrPort(tt.caller)
			if tt.recorded {
				if err := PutDelivery(m, appAddr, caller); err != nil {
					t.Fatal(err)
				}
				if err := PutDelivery(m, appAddr, caller); !errors.Is(err, ErrDeliveryTaken) {
					t.Errorf("second PutDelivery: %v, want ErrDeliveryTaken", err)
				}
				defer func() {
					if err := DeleteDelivery(m, appAddr, caller); err != nil {
						t.Error(err)
					}
				}()
			}
			before := readCounters(t, o)
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(caller),
				Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					err := rc.Control(func(fd uintptr) {
						serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mesh.DeliveryMark),
							transparent(int(fd), caller.Addr().Is4()))
					})
					return errors.Join(err, serr)
				}}
			var c net.Conn
			inNetns(t, pod, func() error {
				c, err = d.Dial("tcp", tt.app)
				return nil
			})
			if err != nil {
				t.Fatalf("dial %s from %s: %v", tt.app, caller, err)
			}
			defer c.Close()
			acceptFrom(t, tt.lands, caller.String())
			if d := diff(before, readCounters(t, o)); d != tt.want {
				t.Errorf("counter deltas = %+v, want %+v", d, tt.want)
			}
		})
	}
}

func transparent(fd int, v4 bool) error {
	if v4 {
		return unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}
	return unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
}
