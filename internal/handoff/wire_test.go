package handoff

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"add", `{"v":2,"type":"add","seq":3,"pod":{"uid":"u1","ips":["198.18.0.2"]}}`, ""},
		{"del", `{"v":2,"type":"del","seq":4,"uid":"u1"}`, ""},
		{"snapshot end empty", `{"v":2,"type":"snapshot-end","seq":1}`, ""},
		{"ack", `{"v":2,"type":"ack","seq":1,"ok":true}`, ""},
		{"ack with takeover", `{"v":2,"type":"ack","seq":1,"ok":true,"takeover":true}`, ""},
		{"handover", `{"v":2,"type":"handover","seq":5}`, ""},
		{"not json", `garbage`, "decode message"},
		{"old version", `{"v":1,"type":"ack"}`, "unsupported protocol version 1"},
		{"future version", `{"v":3,"type":"ack"}`, "unsupported protocol version 3"},
		{"negative pod count", `{"v":2,"type":"snapshot-end","seq":1,"pods":-1}`, "negative pod count"},
		{"unknown type", `{"v":2,"type":"rename","seq":9}`, `unknown message type "rename"`},
		{"add without pod", `{"v":2,"type":"add","seq":1}`, "missing pod uid"},
		{"add without uid", `{"v":2,"type":"add","seq":1,"pod":{"name":"a"}}`, "missing pod uid"},
		{"bad ip", `{"v":2,"type":"add","seq":1,"pod":{"uid":"u","ips":["nope"]}}`, "decode message"},
		{"del without uid", `{"v":2,"type":"del","seq":1}`, "missing uid"},
		{"too large", `{"v":2,"type":"ack","error":"` + strings.Repeat("x", maxMessageSize) + `"}`, "message too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode([]byte(tt.in))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("decode: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("decode error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeKeepsSeqOfInvalidMessage(t *testing.T) {
	m, err := decode([]byte(`{"v":2,"type":"bogus","seq":42}`))
	if err == nil || m == nil || m.Seq != 42 {
		t.Fatalf("decode = %+v, %v; want the message with seq 42 and an error", m, err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := &message{Type: typeAdd, Seq: 7, Pod: &Pod{
		UID: "u1", Name: "a", Namespace: "ns", NetnsCookie: 1 << 40,
		IPs: []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00:18::2")},
	}}
	data, err := encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if out.V != Version || out.Seq != 7 || out.Pod.NetnsCookie != 1<<40 || len(out.Pod.IPs) != 2 || out.Pod.IPs[1] != in.Pod.IPs[1] {
		t.Fatalf("round trip: got %+v %+v", out, out.Pod)
	}
}

// TestTakeoverOnTheWire: takeover is omitted when false (what an older
// agentd never sees otherwise) and an older client's ack, without it,
// decodes as not understanding handover.
func TestTakeoverOnTheWire(t *testing.T) {
	for _, tt := range []struct {
		ack  message
		want string
	}{
		{message{Type: typeAck, Seq: 3, OK: true}, `{"v":2,"type":"ack","seq":3,"ok":true}`},
		{message{Type: typeAck, Seq: 3, OK: true, Takeover: true}, `{"v":2,"type":"ack","seq":3,"ok":true,"takeover":true}`},
		{message{Type: typeAck, Seq: 4, Error: "x", Takeover: true}, `{"v":2,"type":"ack","seq":4,"error":"x","takeover":true}`},
		{message{Type: typeHandover, Seq: 5}, `{"v":2,"type":"handover","seq":5}`},
	} {
		data, err := encode(&tt.ack)
		if err != nil || string(data) != tt.want {
			t.Errorf("encode %+v = %s, %v; want %s", tt.ack, data, err, tt.want)
		}
		m, err := decode(data)
		if err != nil || m.Takeover != tt.ack.Takeover {
			t.Errorf("decode %s = %+v, %v", data, m, err)
		}
	}
}

// TestHandleHandover: a handover reaches the handler, marks the
// connection handed over and is acked with the handler's result; every
// ack says takeover.
func TestHandleHandover(t *testing.T) {
	for _, herr := range []error{nil, fmt.Errorf("stuck")} {
		h, snap := &recHandler{handOverErr: herr}, &snapshot{}
		ack := handle(&fdpass.Packet{Data: []byte(`{"v":2,"type":"handover","seq":7}`)}, h, snap, discardLog())
		if ack.Seq != 7 || ack.OK != (herr == nil) || !ack.Takeover || !snap.handedOver {
			t.Errorf("handler error %v: ack %+v, handed over %v", herr, ack, snap.handedOver)
		}
		if herr != nil && ack.Error != "stuck" {
			t.Errorf("ack error %q, want the handler's", ack.Error)
		}
		h.waitEvents(t, "handover")
	}
	h, snap := &recHandler{}, &snapshot{}
	ack := handle(&fdpass.Packet{Data: []byte(`{"v":2,"type":"teleport","seq":8}`)}, h, snap, discardLog())
	if ack.OK || !ack.Takeover || snap.handedOver {
		t.Errorf("unknown type: ack %+v, handed over %v", ack, snap.handedOver)
	}
}

func TestEncodeRejectsOversized(t *testing.T) {
	p := Pod{UID: "u", Name: strings.Repeat("n", maxMessageSize)}
	if _, err := encode(&message{Type: typeAdd, Pod: &p}); err == nil {
		t.Fatal("encode of an oversized message succeeded")
	}
}

// TestSnapshotCount: snapshot-end hands the handler the UIDs of the adds
// before it when their number is agentd's; otherwise it keeps every pod
// (an error, no SnapshotDone). Adds after it are not part of a snapshot,
// and a second snapshot-end is an error.
func TestSnapshotCount(t *testing.T) {
	ns := selfNetns(t)
	add := func(h Handler, snap *snapshot, uid string) error {
		f, err := fdpass.Dup(ns)
		if err != nil {
			t.Fatal(err)
		}
		p := pod(uid, 1)
		return dispatch(&message{Type: typeAdd, Pod: &p}, &fdpass.Packet{Files: []*os.File{f}}, h, snap)
	}
	h, snap := &recHandler{}, &snapshot{}
	for _, uid := range []string{"a", "b"} {
		if err := add(h, snap, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := dispatch(&message{Type: typeSnapshotEnd, Pods: 3}, &fdpass.Packet{}, h, snap); err == nil || !strings.Contains(err.Error(), "snapshot of 3 pods, 2 adds") {
		t.Errorf("a short snapshot: %v", err)
	}
	if ev := h.snapshot(); len(ev) != 2 {
		t.Errorf("a short snapshot reached the handler: %q", ev)
	}
	h, snap = &recHandler{}, &snapshot{}
	add(h, snap, "a")
	if err := dispatch(&message{Type: typeSnapshotEnd, Pods: 1}, &fdpass.Packet{}, h, snap); err != nil {
		t.Fatal(err)
	}
	add(h, snap, "c")
	if err := dispatch(&message{Type: typeSnapshotEnd}, &fdpass.Packet{}, h, snap); err == nil {
		t.Error("a second snapshot-end accepted")
	}
	h.waitEvents(t, "add a ino="+fmt.Sprint(inode(ns))+" cookie=1", "snapshot-end a", "add c ino="+fmt.Sprint(inode(ns))+" cookie=1")
}

// FuzzDecode checks that no input panics, that accepted messages are
// valid, and that they survive a round trip.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":2,"type":"add","seq":3,"pod":{"uid":"u1","ips":["198.18.0.2"]}}`))
	f.Add([]byte(`{"v":2,"type":"snapshot-end","seq":1,"pods":2}`))
	f.Add([]byte(`{"v":2,"type":"ack","seq":1,"ok":false,"error":"x"}`))
	f.Add([]byte(`{"v":2,"type":"del","uid":""}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decode(data)
		if err != nil {
			return
		}
		if m.V != Version || m.validate() != nil {
			t.Fatalf("decode accepted an invalid message: %+v", m)
		}
		again, err := encode(m)
		if err != nil {
			return // valid but too large once re-encoded (escapes)
		}
		m2, err := decode(again)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if a, _ := encode(m2); !bytes.Equal(a, again) {
			t.Fatalf("round trip changed the message:\n%s\n%s", again, a)
		}
	})
}

// FuzzHandle feeds arbitrary packets to ztunnel's dispatcher.
func FuzzHandle(f *testing.F) {
	f.Add([]byte(`{"v":2,"type":"add","seq":3,"pod":{"uid":"u1"}}`))
	f.Add([]byte(`{"v":2,"type":"del","seq":3,"uid":"u1"}`))
	f.Add([]byte(`{"v":2,"type":"ack","seq":3}`))
	f.Add([]byte(`{"v":2,"type":"handover","seq":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ack := handle(&fdpass.Packet{Data: data}, nopHandler{}, &snapshot{}, discardLog())
		if ack.Type != typeAck || !ack.Takeover || (!ack.OK && ack.Error == "") {
			t.Fatalf("bad ack %+v", ack)
		}
	})
}
