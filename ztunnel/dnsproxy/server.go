package dnsproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// closeWait bounds how long Close waits for the forwards in flight.
const closeWait = 5 * time.Second

// Pod is the pod a Server answers for.
type Pod struct {
	Namespace, Name string
	// NetnsCookie keys the upstreams the capture recorded for the pod.
	NetnsCookie uint64
	// IPs are the pod's own addresses: besides loopback, the only
	// sources a query may come from (see fromPod).
	IPs []netip.Addr
}

// Server is the DNS proxy of one pod: its sockets, its read loops and its
// forwards in flight, all ended by Close.
type Server struct {
	p    *Proxy
	pod  Pod
	net  Net
	log  *slog.Logger
	conn *net.UDPConn

	forwards chan struct{} // a slot per forward in flight
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // read loops and forwards
	once     sync.Once
	closeErr error
}

// listenAddr is the proxy's one socket: dual-stack, on every address of
// the pod netns (one fd per pod, not one per family). The capture sends
// IPv4 queries to 127.0.0.1 and IPv6 ones to [::1], both of which it
// takes; a query from anywhere but the pod itself is dropped (fromPod).
var listenAddr = fmt.Sprintf(":%d", mesh.DNSPort)

// Sockets is how many sockets Start opens.
func Sockets() int { return 1 }

// fromPod reports whether a query from client comes from inside the pod:
// a loopback address (where the capture sends queries) or the pod's own
// (an app whose socket is bound to it). The socket listens on the pod's
// addresses too, where anyone may send to it; they get no answer.
func (s *Server) fromPod(client netip.AddrPort) bool {
	a := client.Addr().Unmap()
	if a.IsLoopback() {
		return true
	}
	for _, ip := range s.pod.IPs {
		if ip.Unmap() == a {
			return true
		}
	}
	return false
}

// Start opens the pod's proxy socket in n and serves it until Close.
func (p *Proxy) Start(pod Pod, n Net) (*Server, error) {
	c, err := n.ListenUDP("udp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("dns proxy: %w", err)
	}
	s := &Server{p: p, pod: pod, net: n, conn: c, forwards: make(chan struct{}, p.opts.MaxForwards),
		log: p.opts.Logger.With("pod", pod.Namespace+"/"+pod.Name)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(func() { s.serve(c) })
	return s, nil
}

// Close closes the socket, ends the forwards in flight and waits for
// every goroutine (bounded by closeWait). It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.conn.Close()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeWait):
			s.closeErr = fmt.Errorf("dns proxy of %s/%s: goroutines still running after %s", s.pod.Namespace, s.pod.Name, closeWait)
		}
	})
	return s.closeErr
}

// serve reads c's queries until c is closed.
func (s *Server) serve(c *net.UDPConn) {
	buf := make([]byte, 64<<10)
	for {
		n, client, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Debug("dns proxy read failed", "err", err)
			continue
		}
		if !s.fromPod(client) {
			s.p.metrics.count(Dropped)
			s.log.Debug("dns query from outside the pod dropped", "client", client)
			continue
		}
		s.handle(c, buf[:n], client)
	}
}

// handle answers, forwards or drops one datagram. A panic (there should
// be none: decide takes any bytes) drops the datagram, is logged and
// counted, and does not end the loop.
func (s *Server) handle(c *net.UDPConn, pkt []byte, client netip.AddrPort) {
	defer func() {
		if r := recover(); r != nil {
			s.p.metrics.count(Dropped)
			s.log.Error("panic in dns proxy, query dropped", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	v := decide(pkt, s.p.opts.Index(), s.pod.Namespace, s.p.domain)
	if v.outcome == "" {
		s.forward(c, pkt, client)
		return
	}
	s.p.metrics.count(v.outcome)
	if v.reply != nil {
		c.WriteToUDPAddrPort(v.reply, client) //nolint:errcheck // the client retries
	}
}

// forward sends the query to its upstream on a goroutine of its own, if
// the pod has a slot free; else it is dropped (the client retries).
func (s *Server) forward(c *net.UDPConn, pkt []byte, client netip.AddrPort) {
	select {
	case s.forwards <- struct{}{}:
	default:
		s.p.metrics.count(Dropped)
		return
	}
	q := bytes.Clone(pkt)
	s.wg.Go(func() {
		defer func() { <-s.forwards }()
		reply, outcome := s.exchange(q, client)
		s.p.metrics.count(outcome)
		if reply != nil {
			c.WriteToUDPAddrPort(reply, client) //nolint:errcheck // the client retries
		}
	})
}

// exchange asks the upstream client's query was addressed to; a failure
// is answered SERVFAIL.
func (s *Server) exchange(q []byte, client netip.AddrPort) ([]byte, string) {
	up, err := s.p.opts.Upstreams.LookupDNSUpstream(s.pod.NetnsCookie, clientAddr(client))
	if err == nil {
		var reply []byte
		if reply, err = s.ask(up, q); err == nil {
			return reply, Forwarded
		}
	}
	if s.ctx.Err() != nil {
		return nil, UpstreamError // closing: no answer
	}
	s.log.Debug("dns forward failed", "client", client, "err", err)
	return servFail(q), UpstreamError
}

// ask sends q to up from inside the pod's netns and waits (bounded by the
// timeout and by Close) for the reply to it.
func (s *Server) ask(up netip.AddrPort, q []byte) ([]byte, error) {
	conn, err := s.net.DialUDP(up)
	if err != nil {
		return nil, fmt.Errorf("forward to %s: %w", up, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(s.p.opts.Timeout)) //nolint:errcheck // a fresh socket
	stop := context.AfterFunc(s.ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(q); err != nil {
		return nil, fmt.Errorf("forward to %s: %w", up, err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("reply from %s: %w", up, err)
		}
		if replyMatches(q, buf[:n]) {
			return bytes.Clone(buf[:n]), nil
		}
	}
}

// Addrs are the addresses a query reaches the proxy at: the loopback ones
// its socket on every address takes (for the tests).
func (s *Server) Addrs() []netip.AddrPort {
	a := s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	out := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port())}
	if a.Addr().Is6() {
		out = append(out, netip.AddrPortFrom(netip.IPv6Loopback(), a.Port()))
	}
	return out
}
