package ztunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
)

// TestProtocolDetection: each outbound flow's access line says what it
// carries and how that was decided, and the bytes looked at still reach
// the app: declared by the Service port, sniffed (HTTP/1.x, TLS), a client
// silent past the timeout, an opaque port, a destination outside the mesh.
func TestProtocolDetection(t *testing.T) {
	e := newFakeEnv(t, func(o *NodeOptions) {
		o.Detect = detect.Options{Timeout: 300 * time.Millisecond, OpaquePorts: []uint16{8081}}
	})
	e.listen(e.b, 8081)
	vip := netip.MustParseAddr("10.96.0.7")
	c := e.config(nil)
	c.Services = []meshconfig.Service{{
		Name: "tools", Namespace: "agents", VIPs: []netip.Addr{vip},
		Ports:     []meshconfig.ServicePort{{Name: "mcp", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: "agentmesh.io/mcp"}},
		Endpoints: []meshconfig.Endpoint{{WorkloadUID: "uid-b", IPs: []netip.Addr{e.b.IP}, Ready: true}},
	}}
	e.node.SetConfig(c)

	const request = "POST /mcp HTTP/1.1\r\nHost: tools\r\nContent-Length: 2\r\n\r\n{}"
	for _, tc := range []struct {
		name     string
		dst      netip.AddrPort
		msg      string
		silent   bool // wait for the decision before sending
		app, by  string
		protocol string
	}{
		{"declared by the service port", netip.AddrPortFrom(vip, 80), "not http at all", false, "mcp", "declared", "hbone"},
		{"http/1.1 sniffed", netip.AddrPortFrom(e.b.IP, 8080), request, false, "http1", "sniffed", "hbone"},
		{"tls sniffed", netip.AddrPortFrom(e.b.IP, 8080), "\x16\x03\x01\x00\x10client hello....", false, "tcp", "sniffed", "hbone"},
		{"silent client", netip.AddrPortFrom(e.b.IP, 8080), "late", true, "tcp", "timeout", "hbone"},
		{"opaque port", netip.AddrPortFrom(e.b.IP, 8081), request, false, "tcp", "opaque_port", "hbone"},
		{"outside the mesh", netip.AddrPortFrom(e.x.IP, 8080), request, false, "tcp", "not_sniffed", "passthrough"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.node.rec.M.Detected.WithLabelValues(tc.app, tc.by))
			conn, err := e.dial(e.a, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			if tc.silent {
				waitFor(t, "the timeout decision", func() bool {
					return testutil.ToFloat64(e.node.rec.M.Detected.WithLabelValues(tc.app, tc.by)) == before+1
				})
			}
			if got, err := roundTrip(conn, tc.msg); err != nil || got != "echo:"+tc.msg {
				t.Fatalf("round trip = %q, %v; want every byte echoed", got, err)
			}
			e.logs.wait(t, map[string]any{
				"msg": "access", "direction": "outbound", "protocol": tc.protocol, "dst_addr": tc.dst.String(),
				"app_protocol": tc.app, "app_protocol_by": tc.by, "result": "ok",
			})
			if got := testutil.ToFloat64(e.node.rec.M.Detected.WithLabelValues(tc.app, tc.by)); got != before+1 {
				t.Errorf("ztunnel_protocol_detected_total{%s,%s} = %v, want %v", tc.app, tc.by, got, before+1)
			}
		})
	}
}
