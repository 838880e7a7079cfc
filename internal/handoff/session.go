package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// session serves one ztunnel connection: it sends the queued messages one
// at a time, each after the previous one was acknowledged. A session is the
// server's current one, a candidate, or neither once it was replaced or is
// handing its pods over (then it gets no more updates and ends soon).
type session struct {
	srv      *Server
	id       uint64 // the server's connection count when it came, for logs
	conn     *net.UnixConn
	log      *slog.Logger
	cancel   context.CancelCauseFunc
	acks     chan *message // from the reader to the writer
	wake     chan struct{} // capacity 1: the queue grew
	seq      uint64        // owned by the writer
	takeover atomic.Bool   // the client's last ack said it understands handover
	started  atomic.Int64  // when the client's process started, from its acks (0: unknown, an older client)
	acked    atomic.Bool   // the client has acknowledged a message (takeover and started are known)
	// promotable: a candidate that set every pod up while the current
	// client had acknowledged nothing; guarded by srv.mu.
	promotable bool

	queue []*outgoing // guarded by srv.mu
}

// outgoing is one queued message.
type outgoing struct {
	msg   message
	netns *os.File      // add only: a duplicate owned by the queue
	acked chan struct{} // closed once acknowledged or dropped
	ack   *message      // the acknowledgement, nil if none came; set before acked is closed
}

// startSession queues the full snapshot, makes the session current (or a
// candidate when there is a current one) and starts serving it in wg.
func (s *Server) startSession(ctx context.Context, c *net.UnixConn, wg *sync.WaitGroup) {
	ctx, cancel := context.WithCancelCause(ctx)
	sess := &session{
		srv:    s,
		conn:   c,
		cancel: cancel,
		acks:   make(chan *message),
		wake:   make(chan struct{}, 1),
	}
	s.mu.Lock()
	s.conns++
	sess.id = s.conns
	sess.log = s.log.With("client", "ztunnel", "conn", sess.id)
	n := sess.enqueueSnapshotLocked()
	candidate := s.current != nil
	if candidate {
		s.candidates = append(s.candidates, sess)
	} else {
		s.current = sess
	}
	s.mu.Unlock()
	if candidate {
		sess.log.Info("ztunnel connected beside the current one, sending snapshot", "pods", n)
	} else {
		sess.log.Info("ztunnel connected, sending snapshot", "pods", n)
	}
	wg.Go(func() { sess.run(ctx) })
}

// Why the server ends a session.
var (
	errStopped  = errors.New("closed by server")
	errReplaced = errors.New("replaced by a successor")
	// errHandedOver (client.go) ends a session after its handover.
)

// promote makes candidate sess current once it has acknowledged its
// snapshot with takeover. The previous current session is sent a handover
// if it understands one, and is closed at once otherwise. But when the
// current client's process started after the candidate's (an agentd
// restart during an upgrade: the old ztunnel reconnected beside the new
// one), the candidate is the one handed over: the newer ztunnel keeps the
// pods. While the current client has acknowledged nothing yet (its start
// is not known), the decision waits for its first ack (promotePending).
func (s *Server) promote(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.promoteLocked(sess)
}

func (s *Server) promoteLocked(sess *session) {
	i := slices.Index(s.candidates, sess)
	if s.closed || i < 0 { // already current, or gone
		return
	}
	prev := s.current
	if prev != nil && !prev.acked.Load() {
		sess.promotable = true
		sess.log.Info("ztunnel set up every pod; waiting for the current ztunnel's first acknowledgement to tell which one is newer")
		return
	}
	s.candidates = slices.Delete(s.candidates, i, i+1)
	if prev != nil && prev.takeover.Load() && prev.started.Load() > sess.started.Load() {
		sess.log.Info("sending handover to a ztunnel older than the current one")
		sess.enqueueLocked(&outgoing{msg: message{Type: typeHandover}})
		return
	}
	s.current = sess
	sess.log.Info("ztunnel candidate promoted to current", "reason", "it set up every pod")
	if prev == nil {
		return
	}
	if prev.takeover.Load() {
		prev.log.Info("sending handover to the previous ztunnel")
		prev.enqueueLocked(&outgoing{msg: message{Type: typeHandover}})
		return
	}
	prev.log.Info("previous ztunnel does not understand handover, closing it")
	prev.cancel(errReplaced)
}

// promotePending decides for the candidates that waited for the current
// client's first ack (promoteLocked).
func (s *Server) promotePending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range slices.Clone(s.candidates) {
		if c.promotable {
			c.promotable = false
			s.promoteLocked(c)
		}
	}
}

// enqueueSnapshotLocked queues an add per pod, ordered by UID, and then
// snapshot-end. It returns the number of pods.
func (sess *session) enqueueSnapshotLocked() int {
	uids := make([]string, 0, len(sess.srv.pods))
	for uid := range sess.srv.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	sent := uids[:0]
	for _, uid := range uids {
		if sess.enqueueAddLocked(sess.srv.pods[uid]) != nil {
			sent = append(sent, uid)
		}
	}
	sess.enqueueLocked(&outgoing{msg: message{Type: typeSnapshotEnd, Pods: len(sent)}})
	return len(sent)
}

// enqueueAddLocked queues an add for e with its own duplicate of the fd;
// nil when it could not.
func (sess *session) enqueueAddLocked(e *entry) *outgoing {
	f, err := fdpass.Dup(e.netns)
	if err != nil {
		sess.log.Error("cannot send pod", "uid", e.pod.UID, "err", err)
		return nil
	}
	p := e.pod
	o := &outgoing{msg: message{Type: typeAdd, Pod: &p}, netns: f}
	sess.enqueueLocked(o)
	return o
}

// enqueueLocked appends o and returns the channel closed when it is acked.
func (sess *session) enqueueLocked(o *outgoing) chan struct{} {
	o.acked = make(chan struct{})
	sess.queue = append(sess.queue, o)
	select {
	case sess.wake <- struct{}{}:
	default:
	}
	return o.acked
}

// run serves the connection until ctx is done or the client fails.
func (sess *session) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { sess.conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { sess.readAcks(ctx) })
	werr := sess.writeLoop(ctx)
	sess.cancel(werr)
	sess.conn.Close()
	wg.Wait()
	sess.finish()
	err := context.Cause(ctx)
	if errors.Is(werr, errHandedOver) {
		err = werr // the client may have hung up first, as it should
	}
	switch {
	case errors.Is(err, errStopped) || errors.Is(err, errReplaced) ||
		errors.Is(err, errHandedOver) || errors.Is(err, context.Canceled):
		sess.log.Info("ztunnel connection closed", "reason", err)
	case errors.Is(err, io.EOF):
		sess.log.Info("ztunnel disconnected")
	default:
		sess.log.Warn("dropping ztunnel connection", "err", err)
	}
}

// finish detaches the session and releases what is still queued. When the
// session was current, the oldest candidate becomes current.
func (sess *session) finish() {
	s := sess.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.candidates, sess); i >= 0 {
		s.candidates = slices.Delete(s.candidates, i, i+1)
	}
	if s.current == sess {
		s.current = nil
		if len(s.candidates) > 0 && !s.closed {
			s.current = s.candidates[0]
			s.candidates = slices.Delete(s.candidates, 0, 1)
			s.current.promotable = false
			s.current.log.Info("ztunnel candidate promoted to current", "reason", "the current ztunnel is gone")
			// The others that set every pod up are weighed against it.
			for _, c := range slices.Clone(s.candidates) {
				if c.promotable {
					c.promotable = false
					s.promoteLocked(c)
				}
			}
		}
	}
	for _, o := range sess.queue {
		o.release()
	}
	sess.queue = nil
}

// release closes o's fd and wakes whoever waits for its ack.
func (o *outgoing) release() {
	if o.netns != nil {
		o.netns.Close()
		o.netns = nil
	}
	close(o.acked)
}

// writeLoop sends queued messages one by one until ctx is done, the
// client misbehaves or it handed its pods over, and returns why it stopped.
// A candidate's snapshot-end acked with takeover promotes it.
func (sess *session) writeLoop(ctx context.Context) error {
	for {
		o := sess.next()
		if o == nil {
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-sess.wake:
				continue
			}
		}
		ack, err := sess.send(ctx, o)
		o.ack = ack
		o.release()
		switch {
		case o.msg.Type == typeHandover:
			return sess.handedOver(ack, err)
		case err != nil:
			return err
		case o.msg.Type == typeSnapshotEnd && ack != nil:
			sess.snapshotAcked(ack)
		}
	}
}

// snapshotAcked promotes a candidate whose client acked its snapshot with
// takeover; any other candidate stays one.
func (sess *session) snapshotAcked(ack *message) {
	if ack.OK && ack.Takeover {
		sess.srv.promote(sess)
		return
	}
	s := sess.srv
	s.mu.Lock()
	candidate := slices.Contains(s.candidates, sess)
	s.mu.Unlock()
	if !candidate {
		return
	}
	reason := "it does not understand handover"
	if !ack.OK {
		reason = "it rejected the snapshot"
	}
	sess.log.Info("ztunnel stays a candidate beside the current one", "reason", reason)
}

// handedOver logs the outcome of a handover (ack and err from send) and
// returns why the session ends: right after a handover in any case.
func (sess *session) handedOver(ack *message, err error) error {
	switch {
	case ack != nil && ack.OK:
		sess.log.Info("ztunnel handed its pods over to a successor")
	case ack != nil:
		sess.log.Warn("ztunnel failed to hand its pods over to the successor", "err", ack.Error)
	case errors.Is(err, errStopped) || errors.Is(err, context.Canceled):
		return err // shutdown
	default:
		sess.log.Warn("ztunnel did not hand its pods over to the successor", "err", err)
	}
	return errHandedOver
}

// next pops the first queued message, or returns nil.
func (sess *session) next() *outgoing {
	sess.srv.mu.Lock()
	defer sess.srv.mu.Unlock()
	if len(sess.queue) == 0 {
		return nil
	}
	o := sess.queue[0]
	sess.queue[0] = nil
	sess.queue = sess.queue[1:]
	return o
}

// send writes o and waits for its acknowledgement, which it returns. The
// ack is nil when o could not be encoded (then it is skipped) or err is set.
func (sess *session) send(ctx context.Context, o *outgoing) (*message, error) {
	sess.seq++
	o.msg.Seq = sess.seq
	data, err := encode(&o.msg)
	if err != nil {
		sess.log.Error("cannot encode message, skipping it", "err", err)
		return nil, nil
	}
	timeout := sess.srv.ackTimeout
	sess.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := fdpass.Write(sess.conn, data, o.netns); err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-t.C:
		return nil, fmt.Errorf("no ack for %s message %d within %s", o.msg.Type, o.msg.Seq, timeout)
	case ack := <-sess.acks:
		if err := sess.checkAck(&o.msg, ack); err != nil {
			return nil, err
		}
		sess.takeover.Store(ack.Takeover)
		sess.started.Store(ack.Started)
		if !sess.acked.Swap(true) {
			sess.srv.promotePending()
		}
		return ack, nil
	}
}

// checkAck logs a rejected message; a wrong sequence number is fatal.
func (sess *session) checkAck(sent, ack *message) error {
	if ack.Seq != sent.Seq {
		return fmt.Errorf("ack for message %d, expected %d", ack.Seq, sent.Seq)
	}
	if !ack.OK && sent.Type != typeHandover { // handedOver logs that one
		sess.log.Warn("ztunnel rejected message", "type", sent.Type, "seq", sent.Seq,
			"uid", sent.uid(), "err", ack.Error)
	}
	return nil
}

// uid names the pod a message is about, for logs.
func (m *message) uid() string {
	if m.Pod != nil {
		return m.Pod.UID
	}
	return m.UID
}

var errUnexpected = errors.New("unexpected message type")

// readAcks reads the client's packets and hands acks to the writer. Any
// error ends the session.
func (sess *session) readAcks(ctx context.Context) {
	for {
		p, err := fdpass.Read(sess.conn, maxMessageSize)
		if err != nil {
			sess.cancel(fmt.Errorf("read from client: %w", err))
			return
		}
		p.CloseFiles() // a client has no business sending fds
		m, err := decode(p.Data)
		if err == nil && m.Type != typeAck {
			err = fmt.Errorf("%w: %s", errUnexpected, m.Type)
		}
		if err != nil {
			sess.cancel(err)
			return
		}
		select {
		case sess.acks <- m:
		case <-ctx.Done():
			return
		}
	}
}
