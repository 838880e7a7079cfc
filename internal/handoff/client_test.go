package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// TestClientRejectsBadMessages plays a broken agentd against Connect: every
// bad message gets an error ack and the connection keeps working.
func TestClientRejectsBadMessages(t *testing.T) {
	log, _ := newLog(t)
	path := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := &recHandler{}
	startClient(t, path, h, log)
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := selfNetns(t)
	tests := []struct {
		packet  string
		withFD  bool
		wantErr string // "" means an ok ack
	}{
		{`{"v":2,"type":"add","seq":1,"pod":{"uid":"a"}}`, false, "want 1 netns fd, got 0"},
		{`{"v":2,"type":"teleport","seq":2}`, false, `unknown message type "teleport"`},
		{`{"v":2,"type":"teleport","seq":3}`, true, `unknown message type "teleport"`},
		{`{"v":2,"type":"del","seq":4,"uid":"a"}`, true, "carries 1 unexpected fds"},
		{`{"v":2,"type":"ack","seq":5}`, false, "unexpected message type: ack"},
		{`{"v":7,"type":"del","seq":6,"uid":"a"}`, false, "unsupported protocol version 7"},
		{`{"v":2,"type":"add","seq":7,"pod":{"uid":"a","netnsCookie":9}}`, true, ""},
		{`{"v":2,"type":"del","seq":8,"uid":"a"}`, false, ""},
		{`{"v":2,"type":"snapshot-end","seq":9,"pods":1}`, false, ""},
	}
	for _, tt := range tests {
		f := ns
		if !tt.withFD {
			f = nil
		}
		if err := fdpass.Write(c, []byte(tt.packet), f); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		p, err := fdpass.Read(c, maxMessageSize)
		if err != nil {
			t.Fatalf("%s: read ack: %v", tt.packet, err)
		}
		ack, err := decode(p.Data)
		if err != nil || ack.Type != typeAck {
			t.Fatalf("%s: bad ack %q: %v", tt.packet, p.Data, err)
		}
		want, _ := decode([]byte(tt.packet))
		if ack.Seq != want.Seq || ack.OK != (tt.wantErr == "") || !strings.Contains(ack.Error, tt.wantErr) || !ack.Takeover {
			t.Errorf("%s: ack = %+v, want seq %d error %q", tt.packet, ack, want.Seq, tt.wantErr)
		}
	}
	h.waitEvents(t, addEvent("a", ns, 9), "del a", "snapshot-end a")
}

// TestClientHandOver plays agentd handing a client's pods over: the
// handler's HandOver is acked (ok or with its error), the client hangs up
// and Connect returns nil without dialling again.
func TestClientHandOver(t *testing.T) {
	for _, herr := range []error{nil, errors.New("listeners stuck")} {
		t.Run(fmt.Sprint(herr), func(t *testing.T) {
			log, logs := newLog(t)
			path := filepath.Join(t.TempDir(), "fake.sock")
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			h := &recHandler{handOverErr: herr}
			a := goConnect(t, path, h, log)
			ln.SetDeadline(time.Now().Add(5 * time.Second))
			c, err := ln.AcceptUnix()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			for i, packet := range []string{`{"v":2,"type":"snapshot-end","seq":1}`, `{"v":2,"type":"handover","seq":2}`} {
				if err := fdpass.Write(c, []byte(packet), nil); err != nil {
					t.Fatal(err)
				}
				p, err := fdpass.Read(c, maxMessageSize)
				if err != nil {
					t.Fatalf("%s: read ack: %v", packet, err)
				}
				ack, err := decode(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				wantOK := i == 0 || herr == nil
				if ack.Seq != uint64(i+1) || !ack.Takeover || ack.OK != wantOK || (!wantOK && ack.Error != herr.Error()) {
					t.Errorf("%s: ack %s", packet, p.Data)
				}
			}
			if _, err := fdpass.Read(c, maxMessageSize); !errors.Is(err, io.EOF) {
				t.Errorf("after the handover ack: %v, want the client to hang up", err)
			}
			if err := a.wait(t); err != nil {
				t.Fatalf("Connect = %v, want nil", err)
			}
			h.waitEvents(t, "snapshot-end ", "handover")
			ln.SetDeadline(time.Now().Add(10 * time.Millisecond))
			if c2, err := ln.AcceptUnix(); err == nil {
				c2.Close()
				t.Error("Connect dialled again after the hand-over")
			}
			if !strings.Contains(logs.String(), `level=INFO msg="pods handed over to a successor; not reconnecting to agentd"`) {
				t.Error("the end of the connection was not logged")
			}
		})
	}
}

func TestConnectWithoutAgentdReturnsOnCancel(t *testing.T) {
	log, logs := newLog(t)
	path := filepath.Join(t.TempDir(), "nobody.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := Connect(ctx, path, nopHandler{}, log); err != nil {
		t.Fatalf("Connect = %v, want nil on ctx done", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Connect took %s to notice ctx done", d)
	}
	// 100ms, 200ms, ...: a handful of attempts, only the first one a warning.
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for dial failures, want 1", n)
	}
	if n := strings.Count(logs.String(), "retrying"); n < 2 || n > 4 {
		t.Errorf("%d dial attempts in 400ms, want 2..4 with 100ms doubling backoff", n)
	}
}

func TestUpsertWithoutUIDIsIgnored(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	h := &recHandler{}
	startClient(t, path, h, log)
	h.waitEvents(t, "snapshot-end ")
	s.Upsert(Pod{Name: "nameless"}, selfNetns(t))
	s.Upsert(pod("a", 1), selfNetns(t))
	h.waitEvents(t, "snapshot-end ", addEvent("a", selfNetns(t), 1))
}
