package lab

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStatStartTime(t *testing.T) {
	// Field 2 may contain spaces and ')'.
	stat := "1234 (we) ird ) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615"
	got, err := parseStatStartTime(stat)
	if err != nil || got != 987654 {
		t.Fatalf("parseStatStartTime = %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "no paren"} {
		if _, err := parseStatStartTime(bad); err == nil {
			t.Errorf("parseStatStartTime(%q): no error", bad)
		}
	}
}

func TestLabID(t *testing.T) {
	for in, want := range map[string]string{
		"amlab-1a2b3c":         "amlab-1a2b3c",
		"amlab-1a2b3c-n1":      "amlab-1a2b3c",
		"amlab-1a2b3c-planner": "amlab-1a2b3c",
		"amlab-1a2b3cx":        "",
		"amlab-1A2B3C":         "",
		"amlab-12":             "",
		"other-1a2b3c":         "",
		"amlab-zzzzzz-n1":      "",
	} {
		if got := labID(in); got != want {
			t.Errorf("labID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCgroup2MountPoint(t *testing.T) {
	for line, want := range map[string]string{
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw": "/sys/fs/cgroup/unified",
		"29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw":  "/sys/fs/cgroup",
		"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu":   "",
	} {
		got, ok := cgroup2MountPoint(line)
		if got != want || ok != (want != "") {
			t.Errorf("cgroup2MountPoint(%q) = %q, %v; want %q", line, got, ok, want)
		}
	}
}

func TestParseAccessLogs(t *testing.T) {
	in := strings.Join([]string{
		`{"time":"2026-11-26T03:00:00Z","level":"INFO","msg":"starting"}`,
		`not json "access"`,
		`{"time":"2026-11-26T03:00:01Z","level":"INFO","msg":"access","direction":"outbound","protocol":"hbone",` +
			`"src_addr":"198.19.1.2:40000","dst_addr":"198.19.2.2:8080","src_identity":"spiffe://cluster.local/ns/agents/sa/a",` +
			`"dst_identity":"spiffe://cluster.local/ns/agents/sa/b","mtls":true,"bytes_sent":10,"bytes_received":20,"duration_ms":1.5,"result":"ok"}`,
		`{"msg":"other","note":"access"}`,
	}, "\n")
	got, err := ParseAccessLogs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d access logs, want 1: %+v", len(got), got)
	}
	a := got[0]
	if a.Dst() != netip.MustParseAddrPort("198.19.2.2:8080") || !a.MTLS || a.BytesReceived != 20 || a.DurationMS != 1.5 ||
		a.DstIdentity != "spiffe://cluster.local/ns/agents/sa/b" || a.Direction != "outbound" {
		t.Errorf("unexpected access log %+v", a)
	}
}

func TestCollectUIDs(t *testing.T) {
	for body, want := range map[string][]string{
		`[{"uid":"u1","name":"a"},{"uid":"u2"}]`: {"u1", "u2"},
		`{"pods":[{"uid":"u3"}]}`:                {"u3"},
		`{"u4":{"name":"x"}}`:                    {"u4"},
	} {
		var v any
		if err := jsonUnmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		collectUIDs(v, got)
		for _, u := range want {
			if !got[u] {
				t.Errorf("%s: uid %s not found in %v", body, u, got)
			}
		}
	}
}

// frame builds an Ethernet+IP+TCP frame.
func frame(src, dst netip.AddrPort, payload string) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	tcp = append(tcp, payload...)
	eth := make([]byte, 14)
	var ip []byte
	if src.Addr().Is4() {
		binary.BigEndian.PutUint16(eth[12:], etherTypeIPv4)
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[9] = protoTCP
		copy(ip[12:], src.Addr().AsSlice())
		copy(ip[16:], dst.Addr().AsSlice())
	} else {
		binary.BigEndian.PutUint16(eth[12:], etherTypeIPv6)
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6] = protoTCP
		copy(ip[8:], src.Addr().AsSlice())
		copy(ip[24:], dst.Addr().AsSlice())
	}
	return append(append(eth, ip...), tcp...)
}

func TestParseFrame(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"198.19.1.2:40000", "198.19.2.2:8080"},
		{"[fd00:19:1::2]:40000", "[fd00:19:2::2]:15008"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		got, ok := parseFrame(frame(src, dst, "hello"))
		want := Segment{Src: src, Dst: dst, Flags: 0x18, Payload: []byte("hello")}
		if !ok {
			t.Fatalf("%v: not parsed", c)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
			t.Errorf("%v: (-want +got)\n%s", c, diff)
		}
	}
	if _, ok := parseFrame(frame(netip.MustParseAddrPort("1.2.3.4:1"), netip.MustParseAddrPort("1.2.3.5:2"), "x")[:40]); ok {
		t.Error("truncated frame parsed")
	}
}

func TestFlowsContaining(t *testing.T) {
	a, b := netip.MustParseAddrPort("198.19.1.2:1000"), netip.MustParseAddrPort("198.19.2.2:8080")
	segs := []Segment{{Src: a, Dst: b, Payload: []byte("sec")}, {Src: b, Dst: a, Payload: []byte("ack")}, {Src: a, Dst: b, Payload: []byte("ret")}}
	if got := FlowsContaining(segs, []byte("secret")); len(got) != 1 || got[0] != (Flow{a, b}) {
		t.Errorf("split marker: got %v", got)
	}
	if got := FlowsContaining(segs, []byte("secack")); len(got) != 0 {
		t.Errorf("marker across directions matched: %v", got)
	}
	if got := DstPorts(segs); got[8080] != 2 || got[1000] != 1 {
		t.Errorf("DstPorts = %v", got)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(frame(netip.MustParseAddrPort("198.19.1.2:1"), netip.MustParseAddrPort("198.19.2.2:2"), "x"))
	f.Add(frame(netip.MustParseAddrPort("[fd00::1]:1"), netip.MustParseAddrPort("[fd00::2]:2"), "yy"))
	f.Fuzz(func(t *testing.T, b []byte) {
		seg, ok := parseFrame(b)
		if ok && len(seg.Payload) > len(b) {
			t.Fatalf("payload longer than frame")
		}
	})
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
