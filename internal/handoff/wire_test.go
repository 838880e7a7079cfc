package handoff

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"add", `{"v":1,"type":"add","seq":3,"pod":{"uid":"u1","ips":["198.18.0.2"]}}`, ""},
		{"del", `{"v":1,"type":"del","seq":4,"uid":"u1"}`, ""},
		{"snapshot end empty", `{"v":1,"type":"snapshot-end","seq":1}`, ""},
		{"ack", `{"v":1,"type":"ack","seq":1,"ok":true}`, ""},
		{"not json", `garbage`, "decode message"},
		{"old version", `{"v":0,"type":"ack"}`, "unsupported protocol version 0"},
		{"future version", `{"v":2,"type":"ack"}`, "unsupported protocol version 2"},
		{"unknown type", `{"v":1,"type":"rename","seq":9}`, `unknown message type "rename"`},
		{"add without pod", `{"v":1,"type":"add","seq":1}`, "missing pod uid"},
		{"add without uid", `{"v":1,"type":"add","seq":1,"pod":{"name":"a"}}`, "missing pod uid"},
		{"bad ip", `{"v":1,"type":"add","seq":1,"pod":{"uid":"u","ips":["nope"]}}`, "decode message"},
		{"del without uid", `{"v":1,"type":"del","seq":1}`, "missing uid"},
		{"too large", `{"v":1,"type":"ack","error":"` + strings.Repeat("x", maxMessageSize) + `"}`, "message too large"},
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
	m, err := decode([]byte(`{"v":1,"type":"bogus","seq":42}`))
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

func TestEncodeRejectsOversizedSnapshot(t *testing.T) {
	uids := make([]string, maxUIDs)
	for i := range uids {
		uids[i] = strings.Repeat("u", 80)
	}
	if _, err := encode(&message{Type: typeSnapshotEnd, UIDs: uids}); err == nil {
		t.Fatal("encode of an oversized message succeeded")
	}
}

// FuzzDecode checks that no input panics, that accepted messages are
// valid, and that they survive a round trip.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"add","seq":3,"pod":{"uid":"u1","ips":["198.18.0.2"]}}`))
	f.Add([]byte(`{"v":1,"type":"snapshot-end","seq":1,"uids":["a","b"]}`))
	f.Add([]byte(`{"v":1,"type":"ack","seq":1,"ok":false,"error":"x"}`))
	f.Add([]byte(`{"v":1,"type":"del","uid":""}`))
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
	f.Add([]byte(`{"v":1,"type":"add","seq":3,"pod":{"uid":"u1"}}`))
	f.Add([]byte(`{"v":1,"type":"del","seq":3,"uid":"u1"}`))
	f.Add([]byte(`{"v":1,"type":"ack","seq":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ack := handle(&packet{data: data}, nopHandler{}, discardLog())
		if ack.Type != typeAck || (!ack.OK && ack.Error == "") {
			t.Fatalf("bad ack %+v", ack)
		}
	})
}
