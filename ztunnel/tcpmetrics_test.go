package ztunnel

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTCPMetricsPerWorkload: a connection a -> b over HBONE (both pods on
// this fake node) is counted once by each reporter under the workloads'
// names (b's config names its Deployment; a has none, so its pod name
// stands in), opened when connected and closed with its bytes; a
// connection to a port nobody listens on never connected and is not
// counted; one to a pod outside the mesh has an unknown destination.
func TestTCPMetricsPerWorkload(t *testing.T) {
	e := newFakeEnv(t)
	c := e.config(nil)
	c.Workloads[1].WorkloadName = "server-deploy"
	e.node.SetConfig(c)
	m := e.node.rec.M

	conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(conn, "count me"); err != nil || got != "echo:count me" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	for _, reporter := range []string{"source", "destination"} {
		l := []string{reporter, "client", "agents", "server-deploy", "agents", "unknown", "mutual_tls"}
		waitFor(t, reporter+" closed", func() bool { return testutil.ToFloat64(m.TCPClosed.WithLabelValues(l...)) == 1 })
		if got := testutil.ToFloat64(m.TCPOpened.WithLabelValues(l...)); got != 1 {
			t.Errorf("%s: opened %v, want 1", reporter, got)
		}
		if rx, tx := testutil.ToFloat64(m.TCPReceived.WithLabelValues(l...)), testutil.ToFloat64(m.TCPSent.WithLabelValues(l...)); rx != 8 || tx != 13 {
			t.Errorf("%s: received %v, sent %v bytes; want the request's 8 and the answer's 13", reporter, rx, tx)
		}
	}

	// Refused by b's pod (nothing listens on 9999): never connected.
	if conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 9999)); err == nil {
		roundTrip(conn, "x")
	}
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "dst_addr": netip.AddrPortFrom(e.b.IP, 9999).String()})
	if n := testutil.CollectAndCount(m.TCPOpened); n != 2 {
		t.Errorf("%d opened series after a refused connection, want still the 2 of the first", n)
	}

	// Outside the mesh: a passthrough, no identity, destination unknown.
	conn, err = e.dial(e.a, netip.AddrPortFrom(e.x.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(conn, "out"); err != nil || got != "echo:out" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	l := []string{"source", "client", "agents", "unknown", "unknown", "unknown", "none"}
	waitFor(t, "passthrough closed", func() bool { return testutil.ToFloat64(m.TCPClosed.WithLabelValues(l...)) == 1 })
}
