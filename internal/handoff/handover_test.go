package handoff

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// clientRun is one Connect (or old-style client) running in the background.
type clientRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when it returned
	err    error         // what it returned, once done is closed
}

// returned reports whether the client has returned.
func (c *clientRun) returned() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the client to return on its own and returns its error.
func (c *clientRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(5 * time.Second):
		t.Fatal("client did not return")
		return nil
	}
}

// goConnect runs Connect until it returns or the test ends; unlike
// startClient it lets the test see Connect return by itself.
func goConnect(t *testing.T, path string, h Handler, log *slog.Logger) *clientRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &clientRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = Connect(ctx, path, h, log)
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

// oldClient plays a ztunnel of an earlier version 2 release on one
// connection (it does not reconnect): its acks never carry takeover, and it
// answers a handover with an error ack for the unknown type, recording
// "rejected handover". It returns when the server hangs up.
func oldClient(t *testing.T, path string, h *recHandler) *clientRun {
	t.Helper()
	return rawClient(t, path, nil, func(p *fdpass.Packet, m *message, snap *snapshot) (*message, bool) {
		if m != nil && m.Type == typeHandover {
			p.CloseFiles()
			h.record("rejected handover")
			return &message{Type: typeAck, Seq: m.Seq, Error: `unknown message type "handover"`}, false
		}
		ack := handle(p, h, snap, discardLog())
		ack.Takeover = false
		return ack, false
	})
}

// rawClient serves one connection to path on its own, after gate is
// closed (nil: at once): answer makes the ack of each packet (m is nil
// when it does not decode) and says whether the client ends after sending
// it. It returns when answer says so or the server hangs up.
func rawClient(t *testing.T, path string, gate <-chan struct{}, answer func(p *fdpass.Packet, m *message, snap *snapshot) (ack *message, last bool)) *clientRun {
	t.Helper()
	conn := dialRaw(t, path)
	c := &clientRun{cancel: func() { conn.Close() }, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer conn.Close()
		if gate != nil {
			<-gate
		}
		snap := &snapshot{}
		for {
			p, err := fdpass.Read(conn, maxMessageSize)
			if err != nil {
				c.err = err
				return
			}
			m, _ := decode(p.Data)
			ack, last := answer(p, m, snap)
			data, err := encode(ack)
			if err == nil {
				err = fdpass.Write(conn, data, nil)
			}
			if err != nil || last {
				c.err = err
				return
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

// sessionState returns the current session's connection number (0 for
// none), the candidates' and how many connections the server has had.
func sessionState(s *Server) (current uint64, candidates []uint64, conns uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		current = s.current.id
	}
	for _, c := range s.candidates {
		candidates = append(candidates, c.id)
	}
	return current, candidates, s.conns
}

// waitState waits until connection current is current and candidates (in
// that order) are the candidates.
func waitState(t *testing.T, s *Server, current uint64, candidates ...uint64) {
	t.Helper()
	var cur uint64
	var cands []uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cur, cands, _ = sessionState(s); cur == current && slices.Equal(cands, candidates) {
			return
		}
	}
	t.Fatalf("server has current %d, candidates %v; want current %d, candidates %v", cur, cands, current, candidates)
}

// watchConnected samples s.Connected until the returned check is called,
// which fails the test if it ever reported false.
func watchConnected(t *testing.T, s *Server) (check func()) {
	t.Helper()
	var lost atomic.Bool
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !s.Connected() {
				lost.Store(true)
			}
			runtime.Gosched()
		}
	}()
	var once sync.Once
	end := func() { once.Do(func() { close(stop); <-done }) }
	t.Cleanup(end) // when the test stops early
	return func() {
		t.Helper()
		end()
		if lost.Load() {
			t.Error("Connected() reported false during the hand-over")
		}
	}
}

// TestTakeover: a second ztunnel connects beside the synced one, gets the
// full snapshot and every update, and once it acknowledged its snapshot
// the first one is told to hand over, does so once and stops; from then on
// only the successor gets updates, and agentd was connected throughout.
func TestTakeover(t *testing.T) {
	log, logs := newLog(t)
	// B holds its snapshot-end ack back while the test checks things.
	s, path := startServerAckTimeout(t, log, DefaultAckTimeout)
	ns := selfNetns(t)
	s.Upsert(pod("a", 1), ns)
	hA := &recHandler{}
	a := goConnect(t, path, hA, log)
	hA.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 1)
	checkConnected := watchConnected(t, s)

	gate := make(chan struct{})
	open := func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
	hB := &recHandler{snapGate: gate} // B holds its snapshot-end ack back
	b := goConnect(t, path, hB, log)
	t.Cleanup(open) // before B's Connect is stopped
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 1, 2)
	if !strings.Contains(logs.String(), `msg="ztunnel connected beside the current one, sending snapshot" client=ztunnel conn=2 pods=1`) {
		t.Error("the candidate's connection was not logged")
	}
	s.Upsert(pod("b", 2), ns) // B is a candidate: both get it
	hA.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2))
	if a.returned() {
		t.Fatal("the current client stopped before its successor set up its pods")
	}

	open() // B acks its snapshot with takeover: it takes over
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2))
	if err := a.wait(t); err != nil {
		t.Fatalf("A's Connect = %v, want nil after the hand-over", err)
	}
	hA.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2), "handover")
	waitState(t, s, 2)
	waitFor(t, "the hand-over to be logged", func() bool {
		l := logs.String()
		return strings.Contains(l, `msg="ztunnel candidate promoted to current" client=ztunnel conn=2`) &&
			strings.Contains(l, `msg="ztunnel handed its pods over to a successor" client=ztunnel conn=1`) &&
			strings.Contains(l, `msg="ztunnel connection closed" client=ztunnel conn=1 reason="pods handed over to a successor"`) &&
			strings.Contains(l, `msg="pods handed over to a successor; not reconnecting to agentd"`)
	})

	s.Upsert(pod("c", 3), ns)
	s.Remove("a")
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2), addEvent("c", ns, 3), "del a")
	hA.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2), "handover")
	if _, _, conns := sessionState(s); conns != 2 {
		t.Errorf("%d connections, want 2: the handed-over client reconnected", conns)
	}
	if b.returned() {
		t.Error("the successor's Connect returned")
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 0 {
		t.Errorf("%d warnings in a clean hand-over", n)
	}
	checkConnected()
}

// TestOldCurrentIsClosedOnTakeover: a current client that never acked with
// takeover is closed, without a handover, when its successor takes over;
// coming back, it stays a candidate.
func TestOldCurrentIsClosedOnTakeover(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	s.Upsert(pod("a", 1), ns)
	hOld := &recHandler{}
	old := oldClient(t, path, hOld)
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 1)

	hB := &recHandler{}
	startClient(t, path, hB, log)
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	if err := old.wait(t); !errors.Is(err, io.EOF) {
		t.Errorf("old client ended with %v, want the server to hang up", err)
	}
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a") // no handover
	waitState(t, s, 2)
	waitFor(t, "the replacement to be logged", func() bool {
		l := logs.String()
		return strings.Contains(l, `msg="previous ztunnel does not understand handover, closing it" client=ztunnel conn=1`) &&
			strings.Contains(l, `msg="ztunnel connection closed" client=ztunnel conn=1 reason="replaced by a successor"`)
	})

	// The old ztunnel reconnects: it never takes over.
	hOld2 := &recHandler{}
	oldClient(t, path, hOld2)
	hOld2.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitFor(t, "the old client to stay a candidate", func() bool {
		return strings.Contains(logs.String(), `msg="ztunnel stays a candidate beside the current one" client=ztunnel conn=3 reason="it does not understand handover"`)
	})
	waitState(t, s, 2, 3)
	s.Upsert(pod("b", 2), ns)
	hOld2.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2))
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2)) // no handover
	waitState(t, s, 2, 3)
}

// TestOldCandidateBecomesCurrentWhenCurrentLeaves: a candidate without
// takeover gets every update (Remove waits for its ack too) but is not
// promoted until the current client goes away.
func TestOldCandidateBecomesCurrentWhenCurrentLeaves(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	hA := &recHandler{}
	stopA := startClient(t, path, hA, log)
	hA.waitEvents(t, "snapshot-end ")
	waitState(t, s, 1)
	gate := make(chan struct{}) // the candidate's RemovePod waits for it
	var openGate sync.Once
	hOld := &recHandler{delGate: gate}
	oldClient(t, path, hOld)
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	hOld.waitEvents(t, "snapshot-end ")
	waitFor(t, "the old client to stay a candidate", func() bool {
		return strings.Contains(logs.String(), `msg="ztunnel stays a candidate beside the current one" client=ztunnel conn=2`)
	})
	waitState(t, s, 1, 2)

	// Remove waits for the candidate's ack too.
	s.Upsert(pod("x", 1), ns)
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		s.Remove("x")
	}()
	hOld.waitEvents(t, "snapshot-end ", addEvent("x", ns, 1), "del x") // in RemovePod, not acked
	s.Upsert(pod("y", 2), ns)
	// The current client acked the del before it got the add.
	hA.waitEvents(t, "snapshot-end ", addEvent("x", ns, 1), "del x", addEvent("y", ns, 2))
	select {
	case <-removed:
		t.Error("Remove returned before the candidate acknowledged the del")
	default:
	}
	openGate.Do(func() { close(gate) })
	select {
	case <-removed:
	case <-time.After(5 * time.Second):
		t.Fatal("Remove did not return once every client acknowledged the del")
	}
	hOld.waitEvents(t, "snapshot-end ", addEvent("x", ns, 1), "del x", addEvent("y", ns, 2))
	waitState(t, s, 1, 2)

	stopA()
	waitState(t, s, 2)
	if !strings.Contains(logs.String(), `msg="ztunnel candidate promoted to current" client=ztunnel conn=2 reason="the current ztunnel is gone"`) {
		t.Error("the promotion was not logged")
	}
	s.Upsert(pod("z", 3), ns)
	hOld.waitEvents(t, "snapshot-end ", addEvent("x", ns, 1), "del x", addEvent("y", ns, 2), addEvent("z", ns, 3))
	hA.waitEvents(t, "snapshot-end ", addEvent("x", ns, 1), "del x", addEvent("y", ns, 2))
	if strings.Contains(logs.String(), "level=WARN") {
		t.Error("warnings logged")
	}
}

// TestHandOverErrorIsAcked: a handler that fails to hand over is reported
// in the ack; the client stops all the same.
func TestHandOverErrorIsAcked(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	hA := &recHandler{handOverErr: errors.New("listeners stuck")}
	a := goConnect(t, path, hA, log)
	hA.waitEvents(t, "snapshot-end ")
	waitState(t, s, 1)
	hB := &recHandler{}
	startClient(t, path, hB, log)
	hB.waitEvents(t, "snapshot-end ")
	if err := a.wait(t); err != nil {
		t.Fatalf("A's Connect = %v, want nil after a failed hand-over", err)
	}
	hA.waitEvents(t, "snapshot-end ", "handover")
	waitState(t, s, 2)
	waitFor(t, "the failed hand-over to be logged", func() bool {
		l := logs.String()
		return strings.Contains(l, `level=WARN msg="ztunnel failed to hand its pods over to the successor" client=ztunnel conn=1 err="listeners stuck"`) &&
			strings.Contains(l, `msg="ztunnel connection closed" client=ztunnel conn=1 reason="pods handed over to a successor"`) &&
			strings.Contains(l, `msg="pods handed over to a successor; not reconnecting to agentd"`)
	})
	s.Upsert(pod("a", 1), selfNetns(t))
	hB.waitEvents(t, "snapshot-end ", addEvent("a", selfNetns(t), 1))
	if _, _, conns := sessionState(s); conns != 2 {
		t.Errorf("%d connections, want 2: the handed-over client reconnected", conns)
	}
}

// TestRunStopsEverySession: Run's return ends the current session, every
// candidate and a session that is handing over, and leaks no goroutine or
// fd.
func TestRunStopsEverySession(t *testing.T) {
	ns := selfNetns(t)
	warm, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "warm.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	warm.Close() // the runtime's poller is set up before fds are counted
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	log, logs := newLog(t)
	path := filepath.Join(t.TempDir(), "agentd.sock")
	s, err := Listen(path, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	s.Upsert(pod("a", 1), ns)

	// A hands over to B but is stuck in HandOver; an old client and a
	// silent one are candidates.
	stuck := make(chan struct{})
	hA := &handOverBlocker{release: stuck}
	a := goConnect(t, path, hA, log)
	var unstuck sync.Once
	t.Cleanup(func() { unstuck.Do(func() { close(stuck) }) }) // before A's Connect is stopped
	waitState(t, s, 1)
	hB := &recHandler{}
	stopB := startClient(t, path, hB, log)
	hB.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 2)
	waitFor(t, "A to be handing over", func() bool { return hA.called.Load() })
	hOld := &recHandler{}
	old := oldClient(t, path, hOld)
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	silent := dialRaw(t, path)
	waitState(t, s, 2, 3, 4)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	// Every session has ended (and logged so) by the time Run returns.
	if n := strings.Count(logs.String(), `msg="ztunnel connection closed" client=ztunnel conn=`); n != 4 ||
		strings.Count(logs.String(), `reason="closed by server"`) != 4 {
		t.Errorf("%d sessions closed by Run, want 4 closed by server", n)
	}
	if strings.Contains(logs.String(), `reason="the current ztunnel is gone"`) {
		t.Error("a candidate was promoted during shutdown")
	}
	if err := old.wait(t); err == nil {
		t.Error("the old client's connection survived Run")
	}
	expectClosed(t, silent)
	silent.Close()
	unstuck.Do(func() { close(stuck) })
	if err := a.wait(t); err != nil {
		t.Errorf("A's Connect = %v", err)
	}
	stopB()
	if cur, cands, _ := sessionState(s); cur != 0 || len(cands) != 0 || len(s.pods) != 0 {
		t.Errorf("after Run: current %d, candidates %v, %d pods", cur, cands, len(s.pods))
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
	var now int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if now = openFDs(t); now <= fds {
			return
		}
	}
	t.Errorf("%d fds open after Run, %d before: %s", now, fds, fdNames(t))
}

// handOverBlocker is a handler whose HandOver waits for release.
type handOverBlocker struct {
	nopHandler
	release chan struct{}
	called  atomic.Bool
}

func (h *handOverBlocker) HandOver() error {
	h.called.Store(true)
	<-h.release
	return nil
}

// fdNames lists the open fds, for a failure.
func fdNames(t *testing.T) string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		names = append(names, e.Name()+"="+target)
	}
	return strings.Join(names, " ")
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// startedClient plays a ztunnel of this version whose acks say its process
// started at started (Unix nanoseconds); it returns after acking a
// handover, or when the server hangs up.
func startedClient(t *testing.T, path string, h *recHandler, started int64) *clientRun {
	t.Helper()
	return startedClientGated(t, path, h, started, nil)
}

// startedClientGated is startedClient that reads nothing until gate is
// closed (nil: at once).
func startedClientGated(t *testing.T, path string, h *recHandler, started int64, gate <-chan struct{}) *clientRun {
	t.Helper()
	return rawClient(t, path, gate, func(p *fdpass.Packet, m *message, snap *snapshot) (*message, bool) {
		ack := handle(p, h, snap, discardLog())
		ack.Started = started
		return ack, m != nil && m.Type == typeHandover
	})
}

// TestNewerCurrentKeepsThePods: when the current client's process started
// after the candidate's (an agentd restart during an upgrade, the old
// ztunnel reconnecting after the new one), the candidate, once it set every
// pod up, is the one handed over; the newer one stays current.
func TestNewerCurrentKeepsThePods(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	s.Upsert(pod("a", 1), ns)
	hNew, hOld := &recHandler{}, &recHandler{}
	newer := startedClient(t, path, hNew, 200)
	hNew.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 1)
	older := startedClient(t, path, hOld, 100)
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", "handover")
	if err := older.wait(t); err != nil {
		t.Fatalf("older client: %v", err)
	}
	waitState(t, s, 1)
	s.Upsert(pod("b", 2), ns)
	hNew.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2))
	if newer.returned() {
		t.Error("the newer client was handed over")
	}
	waitFor(t, "the hand-over to be logged", func() bool {
		return strings.Contains(logs.String(), `msg="sending handover to a ztunnel older than the current one" client=ztunnel conn=2`)
	})
}

// TestNewerCurrentNotAckedYet: an older candidate that set every pod up
// before the current client acknowledged anything (both reconnected to a
// restarted agentd at once; the new ztunnel sets its pods up slowly) is
// not promoted blindly: the decision waits for the current client's first
// ack, which shows it is newer, and the candidate is handed over.
func TestNewerCurrentNotAckedYet(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	s.Upsert(pod("a", 1), ns)
	hNew, hOld := &recHandler{}, &recHandler{}
	gate := make(chan struct{})
	var release sync.Once
	newer := startedClientGated(t, path, hNew, 200, gate)
	t.Cleanup(func() { release.Do(func() { close(gate) }) }) // before the client's own cleanup
	waitState(t, s, 1)
	older := startedClient(t, path, hOld, 100)
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitFor(t, "the promotion to wait", func() bool {
		return strings.Contains(logs.String(), "waiting for the current ztunnel's first acknowledgement")
	})
	waitState(t, s, 1, 2)
	release.Do(func() { close(gate) })
	hOld.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", "handover")
	if err := older.wait(t); err != nil {
		t.Fatalf("older client: %v", err)
	}
	hNew.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")
	waitState(t, s, 1)
	if newer.returned() {
		t.Error("the newer client was handed over")
	}
}
