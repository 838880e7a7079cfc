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
	"time"
)

// session serves one ztunnel connection: it sends the queued messages one
// at a time, each after the previous one was acknowledged.
type session struct {
	srv    *Server
	conn   *net.UnixConn
	log    *slog.Logger
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the session has fully ended
	acks   chan *message // from the reader to the writer
	wake   chan struct{} // capacity 1: the queue grew
	seq    uint64        // owned by the writer

	queue []*outgoing // guarded by srv.mu
}

// outgoing is one queued message.
type outgoing struct {
	msg   message
	netns *os.File      // add only: a duplicate owned by the queue
	acked chan struct{} // closed once acknowledged or dropped
}

// startSession queues the full snapshot, makes the session current and
// starts serving it.
func (s *Server) startSession(ctx context.Context, c *net.UnixConn) *session {
	ctx, cancel := context.WithCancelCause(ctx)
	sess := &session{
		srv:    s,
		conn:   c,
		log:    s.log.With("client", "ztunnel"),
		cancel: cancel,
		done:   make(chan struct{}),
		acks:   make(chan *message),
		wake:   make(chan struct{}, 1),
	}
	s.mu.Lock()
	n := sess.enqueueSnapshotLocked()
	s.current = sess
	s.mu.Unlock()
	sess.log.Info("ztunnel connected, sending snapshot", "pods", n)
	go sess.run(ctx)
	return sess
}

// errStopped ends a session on the server's behalf (replaced or shutdown).
var errStopped = errors.New("closed by server")

// stop ends the session and waits for it.
func (sess *session) stop() {
	sess.cancel(errStopped)
	<-sess.done
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
		if sess.enqueueAddLocked(sess.srv.pods[uid]) {
			sent = append(sent, uid)
		}
	}
	sess.enqueueLocked(&outgoing{msg: message{Type: typeSnapshotEnd, Pods: len(sent)}})
	return len(sent)
}

// enqueueAddLocked queues an add for e with its own duplicate of the fd.
func (sess *session) enqueueAddLocked(e *entry) bool {
	f, err := dupFile(e.netns)
	if err != nil {
		sess.log.Error("cannot send pod", "uid", e.pod.UID, "err", err)
		return false
	}
	p := e.pod
	sess.enqueueLocked(&outgoing{msg: message{Type: typeAdd, Pod: &p}, netns: f})
	return true
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
	defer close(sess.done)
	stop := context.AfterFunc(ctx, func() { sess.conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { sess.readAcks(ctx) })
	sess.cancel(sess.writeLoop(ctx))
	sess.conn.Close()
	wg.Wait()
	sess.finish()
	switch err := context.Cause(ctx); {
	case errors.Is(err, errStopped) || errors.Is(err, context.Canceled):
		sess.log.Info("ztunnel connection closed", "reason", err)
	case errors.Is(err, io.EOF):
		sess.log.Info("ztunnel disconnected")
	default:
		sess.log.Warn("dropping ztunnel connection", "err", err)
	}
}

// finish detaches the session and releases what is still queued.
func (sess *session) finish() {
	sess.srv.mu.Lock()
	defer sess.srv.mu.Unlock()
	if sess.srv.current == sess {
		sess.srv.current = nil
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

// writeLoop sends queued messages one by one until ctx is done or the
// client misbehaves, and returns why it stopped.
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
		err := sess.send(ctx, o)
		o.release()
		if err != nil {
			return err
		}
	}
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

// send writes o and waits for its acknowledgement.
func (sess *session) send(ctx context.Context, o *outgoing) error {
	sess.seq++
	o.msg.Seq = sess.seq
	data, err := encode(&o.msg)
	if err != nil {
		sess.log.Error("cannot encode message, skipping it", "err", err)
		return nil
	}
	timeout := sess.srv.ackTimeout
	sess.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := writePacket(sess.conn, data, o.netns); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("no ack for %s message %d within %s", o.msg.Type, o.msg.Seq, timeout)
	case ack := <-sess.acks:
		return sess.checkAck(&o.msg, ack)
	}
}

// checkAck logs a rejected message; a wrong sequence number is fatal.
func (sess *session) checkAck(sent, ack *message) error {
	if ack.Seq != sent.Seq {
		return fmt.Errorf("ack for message %d, expected %d", ack.Seq, sent.Seq)
	}
	if !ack.OK {
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
		p, err := readPacket(sess.conn)
		if err != nil {
			sess.cancel(fmt.Errorf("read from client: %w", err))
			return
		}
		p.closeFiles() // a client has no business sending fds
		m, err := decode(p.data)
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
