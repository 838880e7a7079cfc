package detect

import (
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	long := "GET /" + strings.Repeat("a", MaxSniff) + " HTTP/1.1\r\n"
	for _, c := range []struct {
		in   string
		app  App
		done bool
	}{
		{"", Opaque, false},
		{"G", Opaque, false},
		{"GET", Opaque, false},
		{"GET ", Opaque, false},
		{"GET /index", Opaque, false},
		{"GET /index HTTP/1.", Opaque, false},
		{"GET /index HTTP/1.1\r", Opaque, false},
		{"GET /index HTTP/1.1\r\n", HTTP1, true},
		{"POST /mcp HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1, true},
		{"OPTIONS * HTTP/1.0\r\n", HTTP1, true},
		{"CONNECT example.com:443 HTTP/1.1\r\n", HTTP1, true},
		{"M-SEARCH * HTTP/1.1\r\n", Opaque, true}, // not a method Sniff knows
		{"PROPFIND /dav HTTP/1.1\r\n", HTTP1, true},
		{"burst-8b", Opaque, true}, // decided at once: begins no method
		{"hello", Opaque, true},
		{"GETX / HTTP/1.1\r\n", Opaque, true},
		{"POS", Opaque, false},
		{"GET /index HTTP/2.0\r\n", Opaque, true},
		{"GET /index HTTP/1.x\r\n", Opaque, true},
		{"GET /index HTTP/1.1\n", Opaque, true},
		{"GET  /index HTTP/1.1\r\n", Opaque, true},
		{"GET /a b HTTP/1.1\r\n", Opaque, true},
		{" GET / HTTP/1.1\r\n", Opaque, true},
		{"GET\r\n", Opaque, true},
		{"G(T / HTTP/1.1\r\n", Opaque, true},
		{strings.Repeat("A", 30), Opaque, true},
		{"GET", Opaque, false},
		{"\x16\x03\x01\x02\x00\x01", Opaque, true}, // TLS ClientHello
		{"SSH-2.0-OpenSSH_9.2\r\n", Opaque, true},
		{"\x00\x00\x00\x08\x04\xd2\x16\x2f", Opaque, true}, // PostgreSQL SSLRequest
		{"*1\r\n$4\r\nPING\r\n", Opaque, true},             // Redis
		{"PRI", Opaque, false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n", Opaque, false},
		{preface, HTTP2, true},
		{preface + "\x00\x00\x12\x04\x00", HTTP2, true},
		{"PRI * HTTP/1.1\r\n", Opaque, true}, // not the preface, and PRI is no method
		{long[:MaxSniff-1], Opaque, false},
		{long, Opaque, true},
	} {
		app, done := Sniff([]byte(c.in))
		if app != c.app || done != c.done {
			t.Errorf("Sniff(%.40q) = %s, %v; want %s, %v", c.in, app, done, c.app, c.done)
		}
	}
}

func TestDeclared(t *testing.T) {
	for in, want := range map[string]App{
		"http": HTTP1, "HTTP": HTTP1, "kubernetes.io/ws": HTTP1,
		"kubernetes.io/h2c": HTTP2, "http2": HTTP2,
		"grpc": GRPC, "agentmesh.io/a2a": A2A, "agentmesh.io/mcp": MCP,
		"tcp": Opaque, "https": Opaque, "kubernetes.io/wss": Opaque, "mysql": Opaque, "tls": Opaque,
	} {
		if got, ok := Declared(in); !ok || got != want {
			t.Errorf("Declared(%q) = %s, %v; want %s, true", in, got, ok, want)
		}
	}
	if _, ok := Declared(""); ok {
		t.Error(`Declared("") says declared`)
	}
}

// FuzzSniff: never panics; a decision never changes once made as more
// bytes come; HTTP/1 only with a full request line in the first MaxSniff
// bytes.
func FuzzSniff(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", preface, "\x16\x03\x01", "POST /x HTTP/1.0\r\nA: b\r\n\r\n", "PRI * HTTP/1.1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		final, finalDone := Sniff(b)
		for i := 0; i <= len(b); i++ {
			app, done := Sniff(b[:i])
			if done {
				if app != final || !finalDone {
					t.Fatalf("Sniff(%q) = %s (done) but Sniff(%q) = %s, %v", b[:i], app, b, final, finalDone)
				}
				break
			}
			if app != Opaque {
				t.Fatalf("Sniff(%q) undecided but %s, want Opaque", b[:i], app)
			}
		}
		if final == HTTP1 {
			line, _, ok := strings.Cut(string(b[:min(len(b), MaxSniff)]), "\r\n")
			if !ok || strings.Count(line, " ") != 2 || !strings.HasPrefix(line[strings.LastIndexByte(line, ' ')+1:], "HTTP/1.") {
				t.Fatalf("Sniff(%q) = http1 without a request line", b)
			}
		}
	})
}
