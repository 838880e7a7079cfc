package hbone

import (
	"io"
	"net"
	"testing"
)

// BenchmarkStream moves bulk data through one HBONE stream on loopback, the
// server side set up as ztunnel does (NewServerConn), in each direction:
// upload (client to upstream) and download (upstream to client). The
// test/bench benchmarks compare against plain TCP.
func BenchmarkStream(b *testing.B) {
	const chunk = 256 << 10
	buf := make([]byte, chunk)
	b.Run("upload", func(b *testing.B) {
		s := benchStream(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
		b.SetBytes(chunk)
		for b.Loop() {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("download", func(b *testing.B) {
		s := benchStream(b, func(c *net.TCPConn) {
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		})
		b.SetBytes(chunk)
		for b.Loop() {
			if _, err := io.ReadFull(s, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchStream is an HBONE stream to an upstream running serve.
func benchStream(b *testing.B, serve func(*net.TCPConn)) net.Conn {
	e := newEnv(b, HandlerFunc(dialUpstream), ClientOptions{})
	s := e.dial(e.target(idA, upstream(b, serve)))
	b.Cleanup(func() { s.Close() })
	return s
}
