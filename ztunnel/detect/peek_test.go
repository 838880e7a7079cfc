package detect

import (
	"io"
	"net"
	"testing"
	"time"
)

// pair is a loopback TCP connection: the client's end and the accepted one.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestLook(t *testing.T) {
	const line = "POST /mcp HTTP/1.1\r\nHost: tools\r\n\r\n{}"
	for _, c := range []struct {
		name   string
		send   func(c *net.TCPConn)
		app    App
		by     By
		unread string // what a read after Look gets
	}{
		{"http1 at once", func(c *net.TCPConn) { c.Write([]byte(line)) }, HTTP1, BySniff, line},
		{"http1 in pieces", func(c *net.TCPConn) {
			for _, p := range []string{"PO", "ST /m", "cp HTTP/1", ".1\r", "\n", line[len("POST /mcp HTTP/1.1\r\n"):]} {
				c.Write([]byte(p))
				time.Sleep(5 * time.Millisecond) // separate segments
			}
		}, HTTP1, BySniff, line},
		{"http2 preface", func(c *net.TCPConn) { c.Write([]byte(preface)) }, HTTP2, BySniff, preface},
		{"tls", func(c *net.TCPConn) { c.Write([]byte("\x16\x03\x01\x00\x05hello")) }, Opaque, BySniff, "\x16\x03\x01\x00\x05hello"},
		{"server first: client silent", func(*net.TCPConn) {}, Opaque, ByTimeout, ""},
		// A beginning that does not go on: decided after MoreWait, not
		// the whole timeout (the long timeout would say ByTimeout).
		{"partial then silent", func(c *net.TCPConn) { c.Write([]byte("GET /x")) }, Opaque, ByInconclusive, "GET /x"},
		{"short message, not http", func(c *net.TCPConn) { c.Write([]byte("burst-8b")) }, Opaque, BySniff, "burst-8b"},
		{"partial then end", func(c *net.TCPConn) { c.Write([]byte("GET /x")); c.CloseWrite() }, Opaque, ByInconclusive, "GET /x"},
		{"end at once", func(c *net.TCPConn) { c.CloseWrite() }, Opaque, ByInconclusive, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := pair(t)
			sent := make(chan struct{})
			go func() { defer close(sent); c.send(client) }()
			// A decision that needs no timeout must not wait for one: a
			// long timeout then would be reported as ByTimeout.
			timeout := 30 * time.Second
			if c.by == ByTimeout {
				timeout = 200 * time.Millisecond
			}
			app, by, err := Look(server, make([]byte, MaxSniff), timeout)
			if err != nil || app != c.app || by != c.by {
				t.Fatalf("Look = %s, %s, %v; want %s, %s", app, by, err, c.app, c.by)
			}
			// Nothing consumed, no deadline left behind, SO_RCVLOWAT back
			// to 1: a read gets every byte, the first ones at once.
			<-sent
			client.CloseWrite()
			got, err := io.ReadAll(server)
			if err != nil || string(got) != c.unread {
				t.Fatalf("read after Look: %q, %v; want %q", got, err, c.unread)
			}
		})
	}
}

// TestLookThenSmallRead checks SO_RCVLOWAT is reset: after Look waited for
// more than a few bytes, a read of what arrives next returns as soon as
// one byte is there.
func TestLookThenSmallRead(t *testing.T) {
	client, server := pair(t)
	client.Write([]byte("GET /"))
	app, by, err := Look(server, make([]byte, MaxSniff), 10*time.Second)
	if app != Opaque || by != ByInconclusive || err != nil {
		t.Fatalf("Look = %s, %s, %v", app, by, err)
	}
	buf := make([]byte, 100)
	if n, err := io.ReadFull(server, buf[:5]); n != 5 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	client.Write([]byte("x"))
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := server.Read(buf); n != 1 || err != nil {
		t.Fatalf("read of one new byte: %d, %v (SO_RCVLOWAT left raised?)", n, err)
	}
}
