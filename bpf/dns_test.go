package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// attachDNS attaches the DNS programs to cgroup cg until cleanup.
func attachDNS(t *testing.T, o *Objects, cg string) {
	t.Helper()
	for name, at := range map[string]ebpf.AttachType{
		ProgDNSConnect4:     ebpf.AttachCGroupInet4Connect,
		ProgDNSConnect6:     ebpf.AttachCGroupInet6Connect,
		ProgDNSSendmsg4:     ebpf.AttachCGroupUDP4Sendmsg,
		ProgDNSSendmsg6:     ebpf.AttachCGroupUDP6Sendmsg,
		ProgDNSRecvmsg4:     ebpf.AttachCGroupUDP4Recvmsg,
		ProgDNSRecvmsg6:     ebpf.AttachCGroupUDP6Recvmsg,
		ProgDNSGetpeername4: ebpf.AttachCgroupInet4GetPeername,
		ProgDNSGetpeername6: ebpf.AttachCgroupInet6GetPeername,
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: at, Program: o.Programs[name]})
		if err != nil {
			t.Fatalf("attach %s: %v", name, err)
		}
		t.Cleanup(func() { l.Close() })
	}
}

// udpServer answers every datagram on addr in ns with reply(source).
func udpServer(t *testing.T, ns *os.File, network, addr string, reply func(src netip.AddrPort) string) {
	t.Helper()
	var c net.PacketConn
	inNetns(t, ns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() { c.Close(); wg.Wait() })
	u := c.(*net.UDPConn)
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			_, src, err := u.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				u.WriteToUDPAddrPort([]byte(reply(src)), src) //nolint:errcheck // the client times out
			}
		}
	})
}

// dnsPod is a netns with upstream resolvers on 198.18.0.53:53 and
// [fd00:18::53]:53 that answer "upstream", and a stand-in for ztunnel's
// proxy on 127.0.0.1:15053 and [::1]:15053 that answers "proxy <the
// upstream recorded for the client>".
func dnsPod(t *testing.T, o *Objects) (*os.File, uint64) {
	ns := newNetns(t)
	addAddr(t, ns, "lo", "198.18.0.53/32")
	addAddr(t, ns, "lo", "fd00:18::53/128")
	cookie := cookieOf(t, ns)
	upstream := func(netip.AddrPort) string { return "upstream" }
	udpServer(t, ns, "udp4", "198.18.0.53:53", upstream)
	udpServer(t, ns, "udp6", "[fd00:18::53]:53", upstream)
	proxy := func(src netip.AddrPort) string {
		up, err := LookupDNSUpstream(o.Maps[MapDNSUpstream], cookie, src)
		if err != nil {
			return "proxy " + err.Error()
		}
		return "proxy " + up.String()
	}
	udpServer(t, ns, "udp4", "127.0.0.1:15053", proxy)
	udpServer(t, ns, "udp6", "[::1]:15053", proxy)
	return ns, cookie
}

func TestDNSCapture(t *testing.T) {
	o := loadObjects(t)
	cg := newCgroup(t)
	attachDNS(t, o, cg)
	pod, cookie := dnsPod(t, o)
	other, _ := dnsPod(t, o)
	if err := o.Maps[MapEnrolledNetns].Put(cookie, uint8(1)); err != nil {
		t.Fatal(err)
	}
	const (
		up4 = "198.18.0.53:53"
		up6 = "[fd00:18::53]:53"
		m4  = "[::ffff:198.18.0.53]:53"
	)
	tests := []struct {
		name, network, how, dst string
		ns                      *os.File
		mark                    bool
		reply, from, peer       string
		want                    Counters // deltas
	}{
		{"v4 connect", "udp4", "connect", up4, pod, false, "proxy " + up4, up4, up4,
			Counters{DnsRedirected: 1, DnsRestored: 2}},
		{"v4 sendto", "udp4", "sendto", up4, pod, false, "proxy " + up4, up4, "",
			Counters{DnsRedirected: 1, DnsRestored: 1}},
		{"v6 connect", "udp6", "connect", up6, pod, false, "proxy " + up6, up6, up6,
			Counters{DnsRedirected: 1, DnsRestored: 2}},
		{"v6 sendto", "udp6", "sendto", up6, pod, false, "proxy " + up6, up6, "",
			Counters{DnsRedirected: 1, DnsRestored: 1}},
		{"v4-mapped connect on v6 socket", "udp6", "connect", m4, pod, false, "proxy " + up4, m4, m4,
			Counters{DnsRedirected: 1, DnsRestored: 2}},
		{"v4-mapped sendto on v6 socket", "udp6", "sendto", m4, pod, false, "proxy " + up4, m4, "",
			Counters{DnsRedirected: 1, DnsRestored: 1}},
		{"v4 with mesh mark bypasses", "udp4", "connect", up4, pod, true, "upstream", up4, up4, Counters{DnsBypassed: 1}},
		{"v6 with mesh mark bypasses", "udp6", "sendto", up6, pod, true, "upstream", up6, "", Counters{DnsBypassed: 1}},
		{"v4 not enrolled", "udp4", "connect", up4, other, false, "upstream", up4, up4, Counters{}},
		{"v6 not enrolled", "udp6", "sendto", up6, other, false, "upstream", up6, "", Counters{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readCounters(t, o)
			got := queryFrom(t, cg, tt.ns, tt.network, tt.how, tt.dst, tt.mark)
			if got.Reply != tt.reply || got.From != tt.from || got.Peer != tt.peer {
				t.Errorf("app saw reply %q from %s, peer %q; want %q from %s, peer %q",
					got.Reply, got.From, got.Peer, tt.reply, tt.from, tt.peer)
			}
			if d := diff(before, readCounters(t, o)); d != tt.want {
				t.Errorf("counter deltas = %+v, want %+v", d, tt.want)
			}
		})
	}
}

// TestDNSLookupUnknown: a client the programs never saw has no upstream.
func TestDNSLookupUnknown(t *testing.T) {
	o := loadObjects(t)
	_, err := LookupDNSUpstream(o.Maps[MapDNSUpstream], 1, netip.MustParseAddrPort("127.0.0.1:40000"))
	if !errors.Is(err, ErrNoDNSUpstream) {
		t.Errorf("lookup error = %v, want ErrNoDNSUpstream", err)
	}
}

func cookieOf(t *testing.T, ns *os.File) uint64 {
	t.Helper()
	c, err := netns.Cookie(int(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
