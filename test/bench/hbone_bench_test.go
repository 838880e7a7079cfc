package bench

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// The Go benchmarks measure ztunnel's HBONE code (mTLS + HTTP/2 CONNECT,
// ztunnel/hbone) in one process on loopback, each next to its baseline,
// the same traffic over plain TCP, so the cost of the tunnel itself is the
// difference between the two sub-benchmarks of one run:
//
//	go test -run '^$' -bench . ./test/bench/
//
// They leave out the eBPF capture, the namespaces and the second ztunnel;
// `meshlab bench` measures the whole path.

var (
	benchClientID = spiffe.New("cluster.local", "bench", "bench-client")
	benchServerID = spiffe.New("cluster.local", "bench", "bench-server")
)

// hboneEnv is an HBONE server on loopback that connects every CONNECT to
// its authority, and a client with certificates for both identities.
type hboneEnv struct {
	m    *identity.Manager
	cli  *hbone.Client
	addr netip.AddrPort
}

func newHBONEEnv(b *testing.B) *hboneEnv {
	b.Helper()
	quiet := slog.New(slog.DiscardHandler)
	certPEM, keyPEM, err := pki.GenerateCA("cluster.local", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	m := identity.NewManager(identity.ManagerOptions{Signer: ca, Bundle: ca.Bundle(), Logger: quiet})
	for _, id := range []spiffe.ID{benchClientID, benchServerID} {
		if err := m.Ensure(context.Background(), id); err != nil {
			b.Fatal(err)
		}
	}
	srv := hbone.NewServer(hbone.ServerOptions{Logger: quiet})
	// Each stream as ztunnel's pipeline serves one: dial the authority,
	// accept, relay.
	upstream := func(ctx context.Context, s *hbone.Stream) {
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", s.Authority.String())
		if err != nil {
			s.Refuse(err)
			return
		}
		if err := s.Accept(); err != nil {
			up.Close()
			return
		}
		relay.Join(s, up)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := m.ServerTLSConfig(benchServerID, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { srv.ServeConn(ctx, hbone.NewServerConn(c, cfg), upstream) })
		}
	})
	e := &hboneEnv{m: m, cli: hbone.NewClient(hbone.ClientOptions{Logger: quiet}), addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	b.Cleanup(func() {
		e.cli.Close()
		ln.Close()
		srv.Close()
		cancel()
		wg.Wait()
	})
	return e
}

// dial opens an HBONE stream to authority.
func (e *hboneEnv) dial(b *testing.B, authority string) net.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, hbone.Target{
		SrcID: benchClientID, DstID: benchServerID, SrcIP: netip.MustParseAddr("127.0.0.1"),
		HBONEAddr: e.addr, Authority: netip.MustParseAddrPort(authority),
		TLS: e.m.ClientTLSConfig(benchClientID, benchServerID),
	})
	if err != nil {
		b.Fatalf("hbone dial: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// dialers returns the two ways to reach a loopback server: plain TCP (the
// baseline) and an HBONE stream.
func dialers(b *testing.B) map[string]func(addr string) net.Conn {
	return map[string]func(string) net.Conn{
		"tcp": func(addr string) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			return c
		},
		"hbone": func(addr string) net.Conn { return newHBONEEnv(b).dial(b, addr) },
	}
}

// BenchmarkEchoRoundTrip is one 1 KiB request/response round trip on one
// connection (ns/op is the round-trip time).
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, name := range []string{"tcp", "hbone"} {
		b.Run(name, func(b *testing.B) {
			c := dialers(b)[name](benchServer(b, serveEcho))
			frame := make([]byte, 4+1024)
			var buf []byte
			for i := 0; b.Loop(); i++ {
				putFrame(frame, uint64(i))
				if _, err := c.Write(frame); err != nil {
					b.Fatal(err)
				}
				p, err := readFrame(c, buf)
				if err != nil {
					b.Fatal(err)
				}
				if seq, ok := checkPayload(p); !ok || seq != uint64(i) {
					b.Fatalf("bad echo %d", i)
				}
				buf = p
			}
		})
	}
}

// BenchmarkBulk streams on one connection to the discarding server (MB/s
// is the throughput; one op is 256 KiB).
func BenchmarkBulk(b *testing.B) {
	const chunk = 256 << 10
	for _, name := range []string{"tcp", "hbone"} {
		b.Run(name, func(b *testing.B) {
			c := dialers(b)[name](benchServer(b, serveDiscard))
			b.SetBytes(chunk)
			n := int64(b.N) * chunk
			b.ResetTimer()
			if err := send(c, n); err != nil {
				b.Fatal(err)
			}
			if got, err := readCount(c); err != nil || got != n {
				b.Fatalf("server got %d of %d bytes: %v", got, n, err)
			}
		})
	}
}

// benchServer serves handle on a loopback port until the benchmark ends.
func benchServer(b *testing.B, handle func(net.Conn) error) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, handle) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}
