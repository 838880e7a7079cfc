package handoff

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// DefaultAckTimeout is how long the server waits for ztunnel to acknowledge
// one message before it drops the client.
const DefaultAckTimeout = 5 * time.Second

// acceptRetryDelay paces Accept after a transient error.
const acceptRetryDelay = 100 * time.Millisecond

// Server is agentd's side: it keeps the enrolled pods with a netns fd each
// and streams them to the current ztunnel and to every candidate successor
// (see the package doc on hand-over).
type Server struct {
	log        *slog.Logger
	path       string
	ln         *net.UnixListener
	ackTimeout time.Duration // set before Run; tests shorten it

	mu         sync.Mutex
	pods       map[string]*entry // guarded by mu: by pod UID
	current    *session          // guarded by mu: the current client, or nil
	candidates []*session        // guarded by mu: oldest first; empty when current is nil
	conns      uint64            // guarded by mu: connections so far, names sessions in logs
	closed     bool              // guarded by mu: Run is returning or has returned
}

// entry is one pod and the server's own duplicate of its netns fd.
type entry struct {
	pod   Pod
	netns *os.File
}

// Listen creates the socket at path (its directory too, replacing a stale
// socket file) with mode 0600. Call Run to serve it.
func Listen(path string, log *slog.Logger) (*Server, error) {
	ln, err := fdpass.Listen(path)
	if err != nil {
		return nil, err
	}
	return &Server{
		log:        log,
		path:       path,
		ln:         ln,
		ackTimeout: DefaultAckTimeout,
		pods:       map[string]*entry{},
	}, nil
}

// Run accepts ztunnel connections until ctx is done. A connection becomes
// the current one when there is none, or else a candidate that takes over
// once it has set up every pod (see the package doc). On return the
// listener is closed, the socket file removed, every session (current,
// candidate or handing over) ended, every goroutine stopped and every kept
// netns fd closed; Upsert and Remove do nothing afterwards.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	// Sessions end only through cancel, after closed is set: so that none
	// is promoted while Run returns.
	sessCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	var sessions sync.WaitGroup
	defer func() {
		s.mu.Lock()
		s.closed = true // no more promotions, adds or dels
		s.mu.Unlock()
		cancel(errStopped)
		sessions.Wait()
		s.shutdown()
	}()
	for {
		c, err := s.ln.AcceptUnix()
		switch {
		case ctx.Err() != nil:
			if c != nil {
				c.Close()
			}
			return nil
		case errors.Is(err, net.ErrClosed):
			return fmt.Errorf("accept: %w", err)
		case err != nil: // EMFILE and the like: wait and try again
			s.log.Warn("accept ztunnel connection", "err", err)
			time.Sleep(acceptRetryDelay)
			continue
		}
		s.startSession(sessCtx, c, &sessions)
	}
}

// shutdown closes the listener and every kept fd, and removes the socket.
// Every session has ended.
func (s *Server) shutdown() {
	s.ln.Close()
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove hand-off socket", "path", s.path, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for uid, e := range s.pods {
		e.netns.Close()
		delete(s.pods, uid)
	}
}

// Upsert adds or replaces pod p. The server keeps a duplicate of netns (the
// caller keeps and closes its own) and sends an add to the current client
// and every candidate.
func (s *Server) Upsert(p Pod, netns *os.File) {
	s.upsert(p, netns, false) //nolint:errcheck // failures are logged; without a ztunnel the next one gets p in its snapshot
}

// ErrNoZtunnel: no ztunnel is connected to take a gated pod.
var ErrNoZtunnel = errors.New("no ztunnel connected to agentd")

// UpsertGated is Upsert for a pod whose start waits on it (the CNI gate):
// it queues the add at once, marked as gated for the current ztunnel, and
// returns wait, which blocks until that ztunnel acknowledged the add (or
// ctx is done) and returns ztunnel's error: nil means ztunnel serves the
// pod. Without a current ztunnel, wait returns ErrNoZtunnel; the pod stays
// known either way, so the next ztunnel gets it with its snapshot.
func (s *Server) UpsertGated(p Pod, netns *os.File) (wait func(context.Context) error) {
	o, err := s.upsert(p, netns, true)
	if err != nil {
		return func(context.Context) error { return err }
	}
	return func(ctx context.Context) error {
		select {
		case <-o.acked:
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s: waiting for ztunnel: %w", p.Namespace, p.Name, context.Cause(ctx))
		}
		switch {
		case o.ack == nil:
			return fmt.Errorf("pod %s/%s: ztunnel went away before acknowledging it", p.Namespace, p.Name)
		case !o.ack.OK:
			return fmt.Errorf("pod %s/%s: ztunnel: %s", p.Namespace, p.Name, o.ack.Error)
		}
		return nil
	}
}

// upsert keeps p and queues its add for every receiver; it returns the
// add queued for the current ztunnel, which alone is gated when gate is
// set (a snapshot to a later ztunnel is not).
func (s *Server) upsert(p Pod, netns *os.File, gate bool) (*outgoing, error) {
	p.Gate = false
	if p.UID == "" {
		s.log.Error("hand-off ignores a pod without uid", "pod", p.Namespace+"/"+p.Name)
		return nil, errors.New("pod without uid")
	}
	own, err := fdpass.Dup(netns)
	if err != nil {
		s.log.Error("hand-off cannot keep pod netns", "pod", p.Namespace+"/"+p.Name, "uid", p.UID, "err", err)
		return nil, fmt.Errorf("keep netns of %s/%s: %w", p.Namespace, p.Name, err)
	}
	p.IPs = slices.Clone(p.IPs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		own.Close()
		return nil, errStopped
	}
	if old := s.pods[p.UID]; old != nil {
		old.netns.Close()
	}
	e := &entry{pod: p, netns: own}
	s.pods[p.UID] = e
	var cur *outgoing
	for _, sess := range s.receiversLocked() {
		if o := sess.enqueueAddLocked(e); sess == s.current && o != nil {
			cur = o
			o.msg.Pod.Gate = gate // before the write loop takes it (under s.mu)
		}
	}
	if cur == nil {
		return nil, ErrNoZtunnel
	}
	return cur, nil
}

// receiversLocked returns the sessions that get updates: the current one
// and every candidate.
func (s *Server) receiversLocked() []*session {
	if s.current == nil {
		return nil
	}
	return append([]*session{s.current}, s.candidates...)
}

// Remove forgets the pod with uid and sends a del to the current client and
// every candidate. It returns once each of them acknowledged the del (or
// went away), or right away when no client is connected, but never later
// than the ack timeout. Unknown uids are ignored.
func (s *Server) Remove(uid string) {
	s.mu.Lock()
	e := s.pods[uid]
	if e == nil {
		s.mu.Unlock()
		return
	}
	delete(s.pods, uid)
	e.netns.Close()
	var acked []chan struct{}
	for _, sess := range s.receiversLocked() {
		acked = append(acked, sess.enqueueLocked(&outgoing{msg: message{Type: typeDel, UID: uid}}))
	}
	s.mu.Unlock()
	if len(acked) == 0 {
		return
	}
	t := time.NewTimer(s.ackTimeout)
	defer t.Stop()
	for _, done := range acked {
		select {
		case <-done:
		case <-t.C:
			s.log.Warn("ztunnel did not acknowledge del in time", "uid", uid)
			return
		}
	}
}

// Connected reports whether a current ztunnel client is connected.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current != nil
}
