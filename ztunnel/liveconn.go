package ztunnel

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/agentmesh/agentmesh/api/policy"
)

// inboundConn is one inbound connection as policy sees it. Once admitted it
// is in its pod's live set until it ends, and a config change that no
// longer allows it revokes it: every closer attached so far runs, and
// every closer attached later runs at once.
type inboundConn struct {
	pod      *pod
	conn     policy.Conn
	src, dst netip.AddrPort
	srcW     string // namespace/name of the source workload, "" if unknown

	mu      sync.Mutex
	closers []func()
	revoked *policy.Decision // guarded by mu
	ended   bool             // guarded by mu; a revocation then does nothing
}

// attach registers close to run on revocation; false (after running close)
// when ic is revoked already.
func (ic *inboundConn) attach(close func()) bool {
	ic.mu.Lock()
	if ic.revoked != nil {
		ic.mu.Unlock()
		close()
		return false
	}
	ic.closers = append(ic.closers, close)
	ic.mu.Unlock()
	return true
}

// end marks ic as finished: a later revocation neither closes nor
// reports it.
func (ic *inboundConn) end() {
	ic.mu.Lock()
	ic.ended = true
	ic.closers = nil
	ic.mu.Unlock()
}

// revoke records d and runs the closers; false if ic was revoked before or
// has ended.
func (ic *inboundConn) revoke(d policy.Decision) bool {
	ic.mu.Lock()
	if ic.revoked != nil || ic.ended {
		ic.mu.Unlock()
		return false
	}
	ic.revoked = &d
	closers := ic.closers
	ic.closers = nil
	ic.mu.Unlock()
	for _, c := range closers {
		c()
	}
	return true
}

// revocation is the decision that revoked ic, nil if none did.
func (ic *inboundConn) revocation() *policy.Decision {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return ic.revoked
}

// revokedErr is the policyError of a revoked ic, else nil.
func (ic *inboundConn) revokedErr() error {
	if d := ic.revocation(); d != nil {
		return &policyError{d: *d, closed: true}
	}
	return nil
}

// liveSet is a pod's admitted inbound connections. The zero value is empty.
type liveSet struct {
	mu    sync.Mutex
	conns map[*inboundConn]struct{}
}

func (s *liveSet) add(ic *inboundConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*inboundConn]struct{}{}
	}
	s.conns[ic] = struct{}{}
}

func (s *liveSet) remove(ic *inboundConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, ic)
}

func (s *liveSet) snapshot() []*inboundConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*inboundConn, 0, len(s.conns))
	for ic := range s.conns {
		out = append(out, ic)
	}
	return out
}

func (s *liveSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// trackedConn is the upstream of an admitted HBONE stream, handed to the
// HBONE server, which closes it when the stream ends: Close removes the
// stream from its pod's live set. Read and Write errors after a revocation
// carry the policyError, so the stream's access log line says why it ended.
type trackedConn struct {
	net.Conn
	ic      *inboundConn
	release func() // gives back the stream's connection slot; may be nil
	once    sync.Once
}

func (t *trackedConn) Close() error {
	first := false
	t.once.Do(func() {
		first = true
		t.ic.end()
		t.ic.pod.live.remove(t.ic)
	})
	err := t.Conn.Close()
	if first && t.release != nil {
		t.release()
	}
	return err
}

// CloseWrite half-closes the upstream (the client ended its side).
func (t *trackedConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn lets the relay wait for the upstream socket to be readable
// before it lends a buffer to Read (reads still go through Read).
func (t *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := t.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (t *trackedConn) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	return n, t.explain(err)
}

func (t *trackedConn) Write(b []byte) (int, error) {
	n, err := t.Conn.Write(b)
	return n, t.explain(err)
}

func (t *trackedConn) explain(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	if perr := t.ic.revokedErr(); perr != nil {
		return perr
	}
	return err
}
