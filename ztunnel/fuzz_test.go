package ztunnel

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// FuzzInboundHBONE feeds arbitrary bytes to the HBONE listener path (TLS
// handshake, then HTTP/2): it must close the conn in bounded time, never
// panic, never deliver.
func FuzzInboundHBONE(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	ca := newCA(f, td)
	m := newManager(f, ca, nil)
	if err := m.Ensure(context.Background(), idServer); err != nil {
		f.Fatal(err)
	}
	n := NewNode(NodeOptions{Logger: discard, Certs: m, OrigDst: &fakeOrigDst{}, Listeners: &fakeListeners{}, HandshakeTimeout: time.Second})
	f.Cleanup(func() { n.shutdown() })
	n.SetConfig(testConfig(true))
	p := &flow.Pod{ID: idServer, IPs: podIPs(testConfig(true).Workloads[2].IPs), Name: "server", Namespace: "agents"}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		client, server := net.Pipe()
		defer client.Close()
		done := make(chan struct{})
		go func() { defer close(done); defer server.Close(); n.pipe.HBONE(ctx, p, &authorize.Live{}, server) }()
		go func() { client.Write(data); client.Close() }()
		go io.Copy(io.Discard, client) // drain the server's answers; ends at close
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the HBONE pipeline did not return")
		}
	})
}
