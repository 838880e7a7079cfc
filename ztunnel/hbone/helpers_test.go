package hbone

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

var (
	idA = spiffe.New("cluster.local", "ns1", "a")
	idB = spiffe.New("cluster.local", "ns2", "b")
	idC = spiffe.New("cluster.local", "ns3", "c")
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is a CA, a certificate manager for idA, idB, idC, an HBONE server for
// idB on loopback and a client.
type env struct {
	t      testing.TB
	m      *identity.Manager
	srv    *Server // guarded by mu
	cli    *Client
	addr   netip.AddrPort // the HBONE listener
	h      HandlerFunc
	mu     sync.Mutex
	done   []Result // streams that ended; guarded by mu
	active sync.WaitGroup
	// ended, if set, sees each stream after its relay ended.
	ended func(s *Stream)
}

func newEnv(t testing.TB, h HandlerFunc, co ClientOptions) *env {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h}
	e.m = identity.NewManager(identity.ManagerOptions{Signer: ca, Bundle: ca.Bundle(), Logger: quietLogger()})
	for _, id := range []spiffe.ID{idA, idB, idC} {
		if err := e.m.Ensure(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	e.srv = e.newServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := e.m.ServerTLSConfig(idB, nil)
	ctx, cancel := context.WithCancel(context.Background())
	e.active.Add(1)
	go func() {
		defer e.active.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			srv := e.srv
			e.mu.Unlock()
			e.active.Add(1)
			go func() {
				defer e.active.Done()
				srv.ServeConn(ctx, NewServerConn(c, cfg), e.handle)
			}()
		}
	}()
	co.Logger = quietLogger()
	e.cli = NewClient(co)
	t.Cleanup(func() {
		e.cli.Close()
		ln.Close()
		e.server().Close()
		cancel()
		e.active.Wait()
	})
	return e
}

func (e *env) newServer() *Server {
	return NewServer(ServerOptions{Logger: quietLogger()})
}

// HandlerFunc connects a CONNECT to its upstream, as ztunnel's pipeline
// does; an error wrapping ErrDenied is answered 401, any other 503.
type HandlerFunc func(ctx context.Context, r *Request) (net.Conn, error)

// Result is how a stream the env served ended.
type Result struct {
	BytesIn  int64 // client to upstream
	BytesOut int64 // upstream to client
	Status   int
	Err      error
}

// handle serves a stream the way ztunnel's pipeline does: refuse an
// invalid request, dial with e.h, accept, relay, and record the result.
func (e *env) handle(ctx context.Context, s *Stream) {
	var res Result
	defer func() {
		res.Status = s.Status()
		e.mu.Lock()
		e.done = append(e.done, res)
		e.mu.Unlock()
	}()
	if s.Invalid != nil {
		s.Refuse(s.Invalid)
		res.Err = s.Invalid
		return
	}
	up, err := e.h(ctx, &s.Request)
	if err != nil {
		s.Refuse(err)
		res.Err = err
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Close() }) // stream reset, connection gone
	defer stop()
	if err := s.Accept(); err != nil {
		up.Close()
		res.Err = err
		return
	}
	res.BytesIn, res.BytesOut, res.Err = relay.Join(s, up)
	if e.ended != nil {
		e.ended(s)
	}
}

// server is the Server new connections go to.
func (e *env) server() *Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// target is a stream from src (as 127.0.0.1) to the server, for authority.
func (e *env) target(src spiffe.ID, authority netip.AddrPort) Target {
	return Target{
		SrcID: src, DstID: idB, SrcIP: netip.MustParseAddr("127.0.0.1"),
		HBONEAddr: e.addr, Authority: authority,
		TLS: e.m.ClientTLSConfig(src, idB),
	}
}

func (e *env) dial(tg Target) net.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, tg)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	return c
}

func (e *env) results() []Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Result(nil), e.done...)
}

// dialUpstream is a Handler that connects to the authority on loopback.
func dialUpstream(ctx context.Context, r *Request) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", r.Authority.String())
}

// upstream runs serve on every connection to a loopback listener until the test ends.
func upstream(t testing.TB, serve func(c *net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*net.TCPConn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echo copies everything back and half-closes at EOF.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
