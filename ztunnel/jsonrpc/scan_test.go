package jsonrpc

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	long := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"text":"` + strings.Repeat("x", 100) + `"},"name":"late"}}`
	for _, tc := range []struct {
		name      string
		body      string
		truncated bool
		limit     int
		want      []Call // nil with err
		batch     bool
		err       bool
	}{
		{name: "mcp tools/call", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x","name":"decoy"}}}`,
			want: []Call{{Method: "tools/call", ID: []byte("7"), Name: "search", Complete: true}}},
		{name: "a2a message/send", body: `{"id":"r-1","jsonrpc":"2.0","method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"contextId":"conv-9","messageId":"m1"}}}`,
			want: []Call{{Method: "message/send", ID: []byte(`"r-1"`), ContextID: "conv-9", Complete: true}}},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: []Call{{Method: "notifications/initialized", Complete: true}}},
		{name: "escaped member names", body: `{"jsonrpc":"2.0","id":null,"\u006dethod":"tools/call","params":{"n\u0061me":"a\"b"}}`,
			want: []Call{{Method: "tools/call", ID: []byte("null"), Name: `a"b`, Complete: true}}},
		{name: "positional params", body: `{"jsonrpc":"2.0","id":1,"method":"sum","params":[1,2]}`,
			want: []Call{{Method: "sum", ID: []byte("1"), Complete: true}}},
		{name: "batch", body: ` [ {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}, {"jsonrpc":"2.0","method":"tools/list"} ] `, batch: true,
			want: []Call{{Method: "tools/call", ID: []byte("1"), Name: "a", Complete: true}, {Method: "tools/list", Complete: true}}},
		{name: "truncated after the fields", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"text":"xxxx`, truncated: true,
			want: []Call{{Method: "tools/call", ID: []byte("1"), Name: "a"}}},
		{name: "limit before the tool name", body: long, limit: 80,
			want: []Call{{Method: "tools/call", ID: []byte("1")}}},
		{name: "limit large enough", body: long, limit: 1000,
			want: []Call{{Method: "tools/call", ID: []byte("1"), Name: "late", Complete: true}}},
		{name: "not json", body: `method=tools/call`, err: true},
		{name: "ends early, not truncated", body: `{"jsonrpc":"2.0","method":"x"`, err: true},
		{name: "duplicate method", body: `{"jsonrpc":"2.0","method":"tools/list","method":"tools/call"}`, err: true},
		{name: "duplicate tool name", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a","name":"b"}}`, err: true},
		{name: "method in another case", body: `{"jsonrpc":"2.0","method":"tools/list","METHOD":"tools/call"}`, err: true},
		{name: "params in another case", body: `{"jsonrpc":"2.0","method":"tools/call","pArAms":{"name":"evil"}}`, err: true},
		{name: "tool name in another case", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"nAme":"evil"}}`, err: true},
		{name: "long s folds to s", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"meſsage":{"contextId":"c"}}}`, err: true},
		{name: "no version", body: `{"method":"tools/call"}`, err: true},
		{name: "wrong version", body: `{"jsonrpc":"1.0","method":"tools/call"}`, err: true},
		{name: "method not a string", body: `{"jsonrpc":"2.0","method":5}`, err: true},
		{name: "id an object", body: `{"jsonrpc":"2.0","method":"a","id":{}}`, err: true},
		{name: "a string", body: `"tools/call"`, err: true},
		{name: "empty batch", body: `[]`, err: true},
		{name: "batch of numbers", body: `[1,2]`, err: true},
		{name: "trailing data", body: `{"jsonrpc":"2.0","method":"a"} {"jsonrpc":"2.0","method":"b"}`, err: true},
		{name: "invalid utf-8", body: "{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\"}", err: true},
		{name: "empty", body: ``, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Scan([]byte(tc.body), tc.truncated, tc.limit)
			if tc.err {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Scan = %+v, %v; want an ErrInvalid", b, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if b.Batch != tc.batch || len(b.Calls) != len(tc.want) {
				t.Fatalf("Scan = %+v, want %d calls, batch %v", b, len(tc.want), tc.batch)
			}
			for i, c := range b.Calls {
				w := tc.want[i]
				if c.Method != w.Method || string(c.ID) != string(w.ID) || c.Name != w.Name || c.ContextID != w.ContextID || c.Complete != w.Complete || (c.ID == nil) != (w.ID == nil) {
					t.Errorf("call %d = %+v (id %s), want %+v (id %s)", i, c, c.ID, w, w.ID)
				}
			}
		})
	}
}

func TestScanBatchBound(t *testing.T) {
	body := "[" + strings.Repeat(`{"jsonrpc":"2.0","method":"a"},`, MaxBatch) + `{"jsonrpc":"2.0","method":"a"}]`
	if _, err := Scan([]byte(body), false, 1<<20); !errors.Is(err, ErrBatchTooLong) {
		t.Fatalf("Scan of %d calls: %v, want ErrBatchTooLong", MaxBatch+1, err)
	}
}

// FuzzScan: never panics; on a complete body Scan agrees with
// encoding/json: what it accepts is valid JSON whose members decode to the
// same method, id, params.name and params.message.contextId; and any
// prefix of an accepted body, scanned as truncated, is accepted too and
// names no other method or tool.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"contextId":"c"}}}]`,
		`{"jsonrpc":"2.0","method":"x","params":[1,{"a":[]}]}`,
		`{"jsonrpc":"2.0","method":"\u0078"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := Scan(body, false, 1<<20)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Scan accepted invalid JSON %q", body)
		}
		type msg struct {
			ContextID *string `json:"contextId"`
		}
		type params struct {
			Name    *string `json:"name"`
			Message *msg    `json:"message"`
		}
		type req struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
			Params json.RawMessage `json:"params"`
		}
		var reqs []req
		if b.Batch {
			if err := json.Unmarshal(body, &reqs); err != nil {
				t.Fatalf("encoding/json: %v on %q", err, body)
			}
		} else {
			var r req
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("encoding/json: %v on %q", err, body)
			}
			reqs = []req{r}
		}
		if len(reqs) != len(b.Calls) {
			t.Fatalf("%d calls, encoding/json %d in %q", len(b.Calls), len(reqs), body)
		}
		for i, r := range reqs {
			c := b.Calls[i]
			if r.Method != c.Method || !c.Complete {
				t.Fatalf("call %d: method %q complete %v, encoding/json %q in %q", i, c.Method, c.Complete, r.Method, body)
			}
			var p params
			if len(r.Params) > 0 && r.Params[0] == '{' {
				_ = json.Unmarshal(r.Params, &p)
			}
			name, ctx := "", ""
			if p.Name != nil {
				name = *p.Name
			}
			if p.Message != nil && p.Message.ContextID != nil {
				ctx = *p.Message.ContextID
			}
			if name != c.Name || ctx != c.ContextID {
				t.Fatalf("call %d: name %q context %q, encoding/json %q %q in %q", i, c.Name, c.ContextID, name, ctx, body)
			}
		}
		for n := range len(body) {
			pb, err := Scan(body[:n], true, 1<<20)
			if err != nil {
				t.Fatalf("prefix %q of an accepted body: %v", body[:n], err)
			}
			for i, c := range pb.Calls {
				w := b.Calls[i]
				if (c.Method != "" && c.Method != w.Method) || (c.Name != "" && c.Name != w.Name) {
					t.Fatalf("prefix %q: call %+v, whole body %+v", body[:n], c, w)
				}
			}
		}
	})
}
