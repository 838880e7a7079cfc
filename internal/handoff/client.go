package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// Handler is ztunnel's side of the hand-off. Calls come one at a time, in
// the order agentd sent them; an error is sent back to agentd (and logged
// there) but does not end the connection. When the connection to agentd
// ends, the handler should keep serving its pods: the snapshot after the
// reconnection (adds, then SnapshotDone) brings it up to date.
//
// HandOver is the exception: it is the last call. agentd has given this
// client's pods to a successor ztunnel, which has set every one of them
// up; after HandOver returns, Connect acknowledges it (with its error, if
// any) and returns nil without reconnecting, so the handler gets no more
// calls.
type Handler interface {
	// AddPod adds pod p, or replaces it if its UID is known. The handler
	// owns netns and must close it.
	AddPod(p Pod, netns *os.File) error
	// RemovePod removes the pod with uid.
	RemovePod(uid string) error
	// SnapshotDone follows a full snapshot: pods not in uids (which may be
	// empty) must go.
	SnapshotDone(uids []string) error
	// HandOver says a successor now serves every pod: the handler must
	// stop accepting for every pod and drain. It should return once it no
	// longer accepts (draining may go on afterwards): agentd waits for the
	// acknowledgement only up to its ack timeout (DefaultAckTimeout), and
	// closes the connection either way.
	HandOver() error
}

// processStart is when this process started (its package's
// initialization), sent on every ack (message.Started).
var processStart = time.Now().UnixNano()

// Reconnect backoff bounds for Connect.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Connect connects to agentd at path and feeds h until ctx is done,
// reconnecting with backoff (100ms doubling to 2s) whenever the connection
// fails or ends. It returns nil once ctx is done, or once agentd handed
// this client's pods over to a successor: then h.HandOver has returned and
// its acknowledgement was sent (or failed to be: that is logged), and
// Connect does not reconnect. Every ack Connect sends says it understands
// hand-over.
func Connect(ctx context.Context, path string, h Handler, log *slog.Logger) error {
	backoff := minBackoff
	failures := 0
	for {
		err := connectOnce(ctx, path, h, log)
		if errors.Is(err, errHandedOver) {
			log.Info("pods handed over to a successor; not reconnecting to agentd", "path", path)
			return nil
		}
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

var (
	errDial       = errors.New("dial agentd")
	errHandedOver = errors.New("pods handed over to a successor")
)

// connectOnce dials agentd and serves the connection until it ends. After a
// handover it returns errHandedOver, also when its ack could not be sent.
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
		p, err := fdpass.Read(conn, maxMessageSize)
		if err != nil {
			return fmt.Errorf("read from agentd: %w", err)
		}
		ack := handle(p, h, snap, log)
		data, err := encode(ack)
		if err == nil {
			err = fdpass.Write(conn, data, nil)
		}
		if snap.handedOver {
			if err != nil {
				log.Warn("cannot acknowledge the hand-over to agentd", "err", err)
			}
			return errHandedOver
		}
		if err != nil {
			return err
		}
	}
}

// snapshot is what a connection's client knows of agentd's snapshot: the
// UIDs of the adds before snapshot-end. It also notes a handover, after
// which the connection ends.
type snapshot struct {
	uids       []string
	done       bool // snapshot-end came: adds are incremental now
	handedOver bool // a handover came: its ack is the connection's last packet
}

// handle dispatches one packet to h and returns the acknowledgement, which
// always says the client understands hand-over. It always consumes p's
// files: they go to h or are closed.
func handle(p *fdpass.Packet, h Handler, snap *snapshot, log *slog.Logger) *message {
	m, err := decode(p.Data)
	ack := &message{Type: typeAck, Takeover: true, Started: processStart}
	if m != nil {
		ack.Seq = m.Seq
	}
	if err == nil {
		err = dispatch(m, p, h, snap)
	}
	p.CloseFiles()
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
// agentd sent. A handover marks snap handed over, whatever the handler
// returns.
func dispatch(m *message, p *fdpass.Packet, h Handler, snap *snapshot) error {
	if m.Type == typeAdd {
		if len(p.Files) != 1 {
			return fmt.Errorf("add %s: want 1 netns fd, got %d", m.Pod.UID, len(p.Files))
		}
		f := p.Files[0]
		p.Files = nil
		if !snap.done {
			snap.uids = append(snap.uids, m.Pod.UID)
		}
		return h.AddPod(*m.Pod, f)
	}
	if len(p.Files) != 0 {
		return fmt.Errorf("%s message carries %d unexpected fds", m.Type, len(p.Files))
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
	case typeHandover:
		snap.handedOver = true
		return h.HandOver()
	}
	return fmt.Errorf("%w: %s", errUnexpected, m.Type)
}
