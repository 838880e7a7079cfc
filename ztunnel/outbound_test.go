package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/internal/netns"
)

func TestOutboundHBONE(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	for _, tc := range []struct {
		name     string
		listener string
		dst      netip.AddrPort
	}{
		{"ipv4", "127.0.0.1:15001", appB},
		{"ipv6", "[::1]:15001", app6B},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.orig.set(tc.dst)
			c := dialIn(t, e.a, tc.listener)
			got, err := roundTrip(c, "hello "+tc.name)
			if err != nil || got != "echo:hello "+tc.name {
				t.Fatalf("round trip = %q, %v; want echo", got, err)
			}
			key := e.orig.last()
			want := origKey{e.pod("uid-a").info.NetnsCookie, netaddr.AddrPort(c.LocalAddr()), netip.MustParseAddrPort(tc.listener)}
			if key != want {
				t.Errorf("orig dst lookup key = %+v, want %+v", key, want)
			}
			e.logs.wait(t, map[string]any{
				"msg": "access", "direction": "outbound", "protocol": "hbone", "mtls": true,
				"src_workload": "agents/client", "src_identity": spiffeOf("client"),
				"dst_workload": "agents/server", "dst_identity": spiffeOf("server"),
				"dst_addr": tc.dst.String(), "bytes_sent": len("hello " + tc.name),
				"bytes_received": len("echo:hello " + tc.name), "result": "ok",
			})
			e.logs.wait(t, map[string]any{
				"msg": "access", "direction": "inbound", "protocol": "hbone", "mtls": true,
				"src_workload": "agents/client", "src_identity": spiffeOf("client"),
				"dst_workload": "agents/server", "dst_addr": tc.dst.String(), "result": "ok",
			})
			// Delivered from inside B's netns: the app sees B's own address.
			if p := e.appB.lastPeer(); p.Addr() != tc.dst.Addr() {
				t.Errorf("app in B saw peer %s, want an address of B (%s)", p, tc.dst.Addr())
			}
		})
	}
}

func TestOutboundPassthrough(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(appX)
	c := dialIn(t, e.a, "127.0.0.1:15001")
	got, err := roundTrip(c, "plain")
	if err != nil || got != "echo:plain" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "outbound", "protocol": "passthrough", "mtls": false,
		"src_workload": "agents/client", "dst_workload": "", "dst_addr": appX.String(), "result": "ok",
	})
	m := e.node.rec.M
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"opened", testutil.ToFloat64(m.Opened.WithLabelValues("outbound", "passthrough")), 1},
		{"closed ok", testutil.ToFloat64(m.Closed.WithLabelValues("outbound", "passthrough", "ok")), 1},
		{"bytes sent", testutil.ToFloat64(m.Bytes.WithLabelValues("outbound", "passthrough", "sent")), 5},
		{"bytes received", testutil.ToFloat64(m.Bytes.WithLabelValues("outbound", "passthrough", "received")), 10},
	} {
		if c.got != c.want {
			t.Errorf("metric %s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if p := e.appX.lastPeer(); p.Addr() != ipAX {
		t.Errorf("X saw peer %s, want pod A's address %s (dialed from A's netns)", p, ipAX)
	}
}

func TestOutboundUnreachable(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(netip.AddrPortFrom(ipB, 9)) // nothing listens on B:9
	// The app is reset: at connect already when ztunnel's upstream dial
	// failed before the app's connect returned, else on its first read.
	var err error
	if err = netns.Do(int(e.a.Fd()), func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:15001", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := roundTrip(c, "x")
		if got != "" {
			t.Errorf("got %q from a closed port", got)
		}
		return err
	}); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("app saw %v, want a connection reset", err)
	}
	e.logs.wait(t, map[string]any{
		"msg": "access", "direction": "outbound", "protocol": "hbone", "result": "~hbone",
	})
}

func TestDialMarksSocketInPodNetns(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	c, err := e.node.transport.Deliver(context.Background(), &e.pod("uid-a").flow, netip.AddrPort{}, appX)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := netaddr.AddrPort(c.LocalAddr()).Addr(); got != ipAX {
		t.Errorf("source address %s, want pod A's %s", got, ipAX)
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK) })
	if gerr != nil || mark != mesh.SocketMark {
		t.Errorf("SO_MARK = %#x, %v; want %#x", mark, gerr, mesh.SocketMark)
	}
}

func TestOutboundMalformedAndPanic(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	// No original destination (e.g. a direct connection to 15001 with
	// random bytes): logged, closed.
	e.orig.mu.Lock()
	e.orig.err = fmt.Errorf("orig dst: %w", net.ErrClosed)
	e.orig.mu.Unlock()
	c := dialIn(t, e.a, "127.0.0.1:15001")
	c.Write([]byte{0x16, 0x03, 0xff, 0x00, 0x42})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes, want the conn closed", n)
	}
	e.logs.wait(t, map[string]any{"msg": "outbound connection without original destination, closed", "pod": "agents/client"})

	// A panic in the handler is recovered; the process and listener live on.
	e.orig.mu.Lock()
	e.orig.panics = true
	e.orig.mu.Unlock()
	c = dialIn(t, e.a, "127.0.0.1:15001")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("panicking handler left the conn open")
	}
	e.logs.wait(t, map[string]any{"msg": "panic in connection handler, connection closed", "panic": "fake orig dst panics"})

	e.orig.set(appB)
	if got, err := roundTrip(dialIn(t, e.a, "127.0.0.1:15001"), "after"); got != "echo:after" {
		t.Fatalf("after malformed input: round trip = %q, %v", got, err)
	}
}
