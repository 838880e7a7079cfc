package ztunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestJoinHalfClose(t *testing.T) {
	app, down := tcpPair(t)   // app -> ztunnel
	up, backend := tcpPair(t) // ztunnel -> backend
	type result struct {
		sent, recv int64
		err        error
	}
	done := make(chan result, 1)
	go func() {
		s, r, err := join(down, up)
		done <- result{s, r, err}
	}()
	app.Write([]byte("request"))
	app.(*net.TCPConn).CloseWrite()
	backend.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := io.ReadAll(backend) // EOF only if join half-closed up
	if err != nil || string(req) != "request" {
		t.Fatalf("backend read %q, %v", req, err)
	}
	// The backend can still answer after the client's half-close.
	backend.Write(bytes.Repeat([]byte("r"), 100000))
	backend.Close()
	app.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(app)
	if err != nil || len(resp) != 100000 {
		t.Fatalf("app read %d bytes, %v", len(resp), err)
	}
	select {
	case r := <-done:
		if r.sent != 7 || r.recv != 100000 || r.err != nil {
			t.Errorf("join = %d, %d, %v; want 7, 100000, nil", r.sent, r.recv, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("join did not return after both sides finished")
	}
}

func TestJoinResetUnblocksOtherSide(t *testing.T) {
	app, down := tcpPair(t)
	up, backend := tcpPair(t)
	done := make(chan error, 1)
	go func() { _, _, err := join(down, up); done <- err }()
	backend.(*net.TCPConn).SetLinger(0)
	backend.Close() // RST toward ztunnel while the app stays silent
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("join hung after the upstream reset")
	}
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := app.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("app conn not closed after upstream reset: %v", err)
	}
}
