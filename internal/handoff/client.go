package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// Handler is ztunnel's side of the hand-off. Calls come one at a time, in
// the order agentd sent them; an error is sent back to agentd (and logged
// there) but does not end the connection. When the connection to agentd
// ends, the handler should keep serving its pods: the snapshot after the
// reconnection (adds, then SnapshotDone) brings it up to date.
type Handler interface {
	// AddPod adds pod p, or replaces it if its UID is known. The handler
	// owns netns and must close it.
	AddPod(p Pod, netns *os.File) error
	// RemovePod removes the pod with uid.
	RemovePod(uid string) error
	// SnapshotDone follows a full snapshot: pods not in uids (which may be
	// empty) must go.
	SnapshotDone(uids []string) error
}

// Reconnect backoff bounds for Connect.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Connect connects to agentd at path and feeds h until ctx is done,
// reconnecting with backoff (100ms doubling to 2s) whenever the connection
// fails or ends. It returns nil once ctx is done.
func Connect(ctx context.Context, path string, h Handler, log *slog.Logger) error {
	backoff := minBackoff
	failures := 0
	for {
		err := connectOnce(ctx, path, h, log)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errDial) {
			failures++
		} else {
			failures, backoff = 1, minBackoff
		}
		level := slog.LevelDebug
		if failures == 1 {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "agentd hand-off connection failed, retrying", "path", path, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

var errDial = errors.New("dial agentd")

// connectOnce dials agentd and serves the connection until it ends.
func connectOnce(ctx context.Context, path string, h Handler, log *slog.Logger) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return fmt.Errorf("%w: %w", errDial, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	log.Info("connected to agentd", "path", path)
	snap := &snapshot{}
	for {
		p, err := readPacket(conn)
		if err != nil {
			return fmt.Errorf("read from agentd: %w", err)
		}
		ack := handle(p, h, snap, log)
		data, err := encode(ack)
		if err != nil {
			return err
		}
		if err := writePacket(conn, data, nil); err != nil {
			return err
		}
	}
}

// snapshot is what a connection's client knows of agentd's snapshot: the
// UIDs of the adds before snapshot-end.
type snapshot struct {
	uids []string
	done bool // snapshot-end came: adds are incremental now
}

// handle dispatches one packet to h and returns the acknowledgement. It
// always consumes p's files: they go to h or are closed.
func handle(p *packet, h Handler, snap *snapshot, log *slog.Logger) *message {
	m, err := decode(p.data)
	ack := &message{Type: typeAck}
	if m != nil {
		ack.Seq = m.Seq
	}
	if err == nil {
		err = dispatch(m, p, h, snap)
	}
	p.closeFiles()
	if err != nil {
		log.Warn("hand-off message failed", "seq", ack.Seq, "err", err)
		ack.Error = err.Error()
		return ack
	}
	ack.OK = true
	return ack
}

// dispatch calls the handler method for m; an add takes p's only file.
// The adds before snapshot-end are the snapshot: snap collects their UIDs
// (a pod the handler failed to add too, as agentd counts it), and
// snapshot-end hands them to the handler once their number is the one
// agentd sent.
func dispatch(m *message, p *packet, h Handler, snap *snapshot) error {
	if m.Type == typeAdd {
		if len(p.files) != 1 {
			return fmt.Errorf("add %s: want 1 netns fd, got %d", m.Pod.UID, len(p.files))
		}
		f := p.files[0]
		p.files = nil
		if !snap.done {
			snap.uids = append(snap.uids, m.Pod.UID)
		}
		return h.AddPod(*m.Pod, f)
	}
	if len(p.files) != 0 {
		return fmt.Errorf("%s message carries %d unexpected fds", m.Type, len(p.files))
	}
	switch m.Type {
	case typeDel:
		return h.RemovePod(m.UID)
	case typeSnapshotEnd:
		if snap.done {
			return errors.New("a second snapshot-end on one connection")
		}
		snap.done = true
		uids := snap.uids
		snap.uids = nil
		if len(uids) != m.Pods {
			// Adds were lost (refused for their fds): keep every pod
			// rather than drop ones agentd still has.
			return fmt.Errorf("snapshot of %d pods, %d adds of it arrived: pods not re-sent are kept", m.Pods, len(uids))
		}
		return h.SnapshotDone(uids)
	}
	return fmt.Errorf("%w: %s", errUnexpected, m.Type)
}
