package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// attachCapture attaches connect4/6 and sockops to cgroup cg until cleanup.
func attachCapture(t *testing.T, o *Objects, cg string) {
	t.Helper()
	for name, at := range map[string]ebpf.AttachType{
		ProgConnect4: ebpf.AttachCGroupInet4Connect,
		ProgConnect6: ebpf.AttachCGroupInet6Connect,
		ProgSockOps:  ebpf.AttachCGroupSockOps,
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: at, Program: o.Programs[name]})
		if err != nil {
			t.Fatalf("attach %s: %v", name, err)
		}
		t.Cleanup(func() { l.Close() })
	}
}

// podNetns makes a netns with 198.18.0.2 and fd00:18::2 on lo, listeners
// for ztunnel's outbound port and for an "app" on port 80 there.
type podNetns struct {
	ns                     *os.File
	cookie                 uint64
	out4, out6, app4, app6 *listenerT
}

type listenerT = net.TCPListener

func newPod(t *testing.T) *podNetns {
	p := &podNetns{ns: newNetns(t)}
	addAddr(t, p.ns, "lo", "198.18.0.2/32")
	addAddr(t, p.ns, "lo", "fd00:18::2/128")
	p.out4 = listen(t, p.ns, "tcp4", "127.0.0.1:15001")
	p.out6 = listen(t, p.ns, "tcp6", "[::1]:15001")
	p.app4 = listen(t, p.ns, "tcp4", "198.18.0.2:80")
	p.app6 = listen(t, p.ns, "tcp6", "[fd00:18::2]:80")
	c, err := netns.Cookie(int(p.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	p.cookie = c
	return p
}

func TestConnectRedirect(t *testing.T) {
	o := loadObjects(t)
	cg := newCgroup(t)
	attachCapture(t, o, cg)
	pod, other := newPod(t), newPod(t)
	if err := o.Maps[MapEnrolledNetns].Put(pod.cookie, uint8(1)); err != nil {
		t.Fatal(err)
	}
	none := netip.AddrPort{}
	tests := []struct {
		name, network, dst string
		pod                *podNetns
		mark               int // SO_MARK, 0: none
		lands              func(*podNetns) *listenerT
		orig               netip.AddrPort // zero: no orig_dst entry
		want               Counters       // deltas
	}{
		{"v4 redirected", "tcp4", "198.18.0.2:80", pod, 0, out4, netip.MustParseAddrPort("198.18.0.2:80"),
			Counters{ConnectRedirected: 1, SockopsRecorded: 1}},
		{"v6 redirected", "tcp6", "[fd00:18::2]:80", pod, 0, out6, netip.MustParseAddrPort("[fd00:18::2]:80"),
			Counters{ConnectRedirected: 1, SockopsRecorded: 1}},
		{"v4-mapped on v6 socket redirected to 127.0.0.1", "tcp6", "[::ffff:198.18.0.2]:80", pod, 0, out4,
			netip.MustParseAddrPort("198.18.0.2:80"), Counters{ConnectRedirected: 1, SockopsRecorded: 1}},
		{"v4 with mesh mark bypasses", "tcp4", "198.18.0.2:80", pod, mesh.SocketMark, app4, none, Counters{ConnectBypassed: 1}},
		{"v6 with mesh mark bypasses", "tcp6", "[fd00:18::2]:80", pod, mesh.SocketMark, app6, none, Counters{ConnectBypassed: 1}},
		{"v4 with delivery mark bypasses", "tcp4", "198.18.0.2:80", pod, mesh.DeliveryMark, app4, none, Counters{ConnectBypassed: 1}},
		{"v6 with delivery mark bypasses", "tcp6", "[fd00:18::2]:80", pod, mesh.DeliveryMark, app6, none, Counters{ConnectBypassed: 1}},
		{"v4 loopback untouched", "tcp4", "127.0.0.1:15001", pod, 0, out4, none, Counters{}},
		{"v6 loopback untouched", "tcp6", "[::1]:15001", pod, 0, out6, none, Counters{}},
		{"v4 not enrolled", "tcp4", "198.18.0.2:80", other, 0, app4, none, Counters{}},
		{"v6 not enrolled", "tcp6", "[fd00:18::2]:80", other, 0, app6, none, Counters{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readCounters(t, o)
			src := connectFrom(t, cg, tt.pod.ns, tt.network, tt.dst, tt.mark)
			c := acceptFrom(t, tt.lands(tt.pod), src.String())
			got, err := LookupOrigDst(o.Maps[MapOrigDst], tt.pod.cookie, src, addrPort(c.LocalAddr().String()))
			if tt.orig != none {
				if err != nil || got != tt.orig {
					t.Errorf("orig dst = %v, %v; want %v", got, err, tt.orig)
				}
				_, err = LookupOrigDst(o.Maps[MapOrigDst], tt.pod.cookie, src, addrPort(c.LocalAddr().String()))
			}
			if !errors.Is(err, ErrNoOrigDst) {
				t.Errorf("orig dst lookup (again) error = %v, want ErrNoOrigDst", err)
			}
			if d := diff(before, readCounters(t, o)); d != tt.want {
				t.Errorf("counter deltas = %+v, want %+v", d, tt.want)
			}
		})
	}
}

func out4(p *podNetns) *listenerT { return p.out4 }
func out6(p *podNetns) *listenerT { return p.out6 }
func app4(p *podNetns) *listenerT { return p.app4 }
func app6(p *podNetns) *listenerT { return p.app6 }

func addrPort(s string) netip.AddrPort {
	ap := netip.MustParseAddrPort(s)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func readCounters(t *testing.T, o *Objects) Counters {
	t.Helper()
	c, err := ReadCounters(o.Maps[MapStats])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func diff(a, b Counters) Counters {
	return Counters{
		ConnectRedirected: b.ConnectRedirected - a.ConnectRedirected,
		ConnectBypassed:   b.ConnectBypassed - a.ConnectBypassed,
		ConnectErrors:     b.ConnectErrors - a.ConnectErrors,
		SockopsRecorded:   b.SockopsRecorded - a.SockopsRecorded,
		SockopsErrors:     b.SockopsErrors - a.SockopsErrors,
		LookupSteered:     b.LookupSteered - a.LookupSteered,
		LookupDropped:     b.LookupDropped - a.LookupDropped,
		LookupErrors:      b.LookupErrors - a.LookupErrors,
		DnsRedirected:     b.DnsRedirected - a.DnsRedirected,
		DnsBypassed:       b.DnsBypassed - a.DnsBypassed,
		DnsErrors:         b.DnsErrors - a.DnsErrors,
		DnsRestored:       b.DnsRestored - a.DnsRestored,
	}
}
