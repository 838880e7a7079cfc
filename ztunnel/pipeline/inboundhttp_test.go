package pipeline

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzReadCalls: whatever the body and MCP headers, readCalls neither
// panics nor changes the body the app gets, and a refusal is a 4xx.
func FuzzReadCalls(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`), "tools/call", "search", true)
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]`), "", "", true)
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}`), "", "", false)
	f.Add([]byte("not json"), "tools/call", "=?base64?c2VhcmNo?=", true)
	f.Add(bytes.Repeat([]byte(" "), maxBodyScan+10), "", "", false)
	f.Fuzz(func(t *testing.T, body []byte, method, name string, strict bool) {
		r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(body))
		if method != "" {
			r.Header.Set("Mcp-Method", method)
		}
		if name != "" {
			r.Header.Set("Mcp-Name", name)
		}
		calls, ids, _, status, msg, _ := readCalls(r, strict)
		if status != 0 {
			if status < 400 || status > 499 || msg == "" {
				t.Fatalf("refusal %d %q", status, msg)
			}
			return
		}
		if len(ids) != 0 && len(ids) != len(calls) {
			t.Fatalf("%d ids for %d calls", len(ids), len(calls))
		}
		got, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("the app would get %d bytes (%v), sent %d", len(got), err, len(body))
		}
	})
}

func TestReadCalls(t *testing.T) {
	for _, tc := range []struct {
		name, body, method, mcpName string
		status                      int
		calls                       int
		lax                         bool // no rule with jsonrpc or mcp parts applies
	}{
		{"tools/call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, "", "", 0, 1, false},
		{"headers agree", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, "tools/call", "search", 0, 1, false},
		{"base64 name agrees", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, "tools/call", "=?base64?c2VhcmNo?=", 0, 1, false},
		{"name disagrees", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, "tools/call", "other", 400, 0, false},
		{"method disagrees", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "tools/call", "", 400, 0, false},
		{"resources/read names a uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}`, "resources/read", "file:///a", 0, 1, false},
		{"not json", `hello`, "", "", 0, 0, false},
		{"json without a method", `{"a":1}`, "", "", 0, 0, false},
		{"json with a method, no version", `{"id":1,"method":"tools/call","params":{"name":"x"}}`, "", "", 400, 0, false},
		{"json with a method that is not a string", `{"jsonrpc":"2.0","id":1,"method":1}`, "", "", 400, 0, false},
		{"tool past the prefix", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"pad":"` + strings.Repeat("x", maxBodyScan) + `","name":"x"}}`, "", "", 413, 0, false},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]`, "", "", 0, 2, false},
		{"lax: a REST API's JSON", `{"a":1}`, "", "", 0, 0, true},
		{"lax: a large REST body", `{"data":"` + strings.Repeat("x", maxBodyScan) + `"}`, "", "", 0, 0, true},
		{"lax: a call is still read", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, "", "", 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			if tc.method != "" {
				r.Header.Set("Mcp-Method", tc.method)
			}
			if tc.mcpName != "" {
				r.Header.Set("Mcp-Name", tc.mcpName)
			}
			calls, _, _, status, msg, _ := readCalls(r, !tc.lax)
			if status != tc.status || len(calls) != tc.calls {
				t.Errorf("status %d (%s), %d calls; want %d, %d", status, msg, len(calls), tc.status, tc.calls)
			}
		})
	}
}

// TestReadCallsStream: a POST body that is not JSON (gRPC's frames, an
// upload the app answers as it comes) is not held: readCalls returns after
// its first bytes, and the app still gets all of it. A JSON body is read
// whole.
func TestReadCallsStream(t *testing.T) {
	pr, pw := io.Pipe()
	r := httptest.NewRequest(http.MethodPost, "/", pr)
	r.ContentLength = -1
	frame := []byte{0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}
	go pw.Write(frame) // the rest only after readCalls returned
	type result struct {
		calls  int
		status int
	}
	done := make(chan result, 1)
	go func() {
		calls, _, _, status, _, _ := readCalls(r, true)
		done <- result{len(calls), status}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		pw.Close()
		t.Fatal("readCalls waited for more of a body that is not JSON")
	}
	if res.calls != 0 || res.status != 0 {
		t.Fatalf("not JSON: %d calls, status %d; want none, 0", res.calls, res.status)
	}
	go func() {
		pw.Write([]byte("more"))
		pw.Close()
	}()
	got, err := io.ReadAll(r.Body)
	if err != nil || string(got) != string(frame)+"more" {
		t.Fatalf("the app's body: %q, %v; want %q", got, err, string(frame)+"more")
	}

	// JSON sent in pieces is read whole before it is decided.
	pr, pw = io.Pipe()
	r = httptest.NewRequest(http.MethodPost, "/", pr)
	r.ContentLength = -1
	go func() {
		for _, s := range []string{`{"jsonrpc":"2.0","id":1,`, `"method":"tools/call",`, `"params":{"name":"search"}}`} {
			pw.Write([]byte(s))
		}
		pw.Close()
	}()
	calls, _, _, status, msg, _ := readCalls(r, true)
	if status != 0 || len(calls) != 1 || calls[0].Tool != "search" {
		t.Fatalf("JSON in pieces: %v, status %d (%s); want tools/call search", calls, status, msg)
	}
}
