package spiffe

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    ID
		wantErr string
	}{
		{in: "spiffe://cluster.local/ns/agents/sa/planner", want: New("cluster.local", "agents", "planner")},
		{in: "https://cluster.local/ns/agents/sa/planner", wantErr: "scheme"},
		{in: "spiffe://cluster.local/ns/agents", wantErr: "want spiffe://"},
		{in: "spiffe://cluster.local/ns//sa/x", wantErr: "want spiffe://"},
		{in: "spiffe:///ns/a/sa/b", wantErr: "want spiffe://"},
		{in: "spiffe://td/sa/a/ns/b", wantErr: "want spiffe://"},
		{in: "spiffe://td/ns/a/sa/b/extra", wantErr: "want spiffe://"},
	} {
		got, err := Parse(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in || got.URL().String() != tc.in {
			t.Errorf("round trip of %q: String %q, URL %q", tc.in, got.String(), got.URL())
		}
	}
}

func TestFromCertificate(t *testing.T) {
	id := New("td", "ns1", "sa1")
	other := New("td", "ns2", "sa2")
	web, _ := url.Parse("https://example.test/")
	for _, tc := range []struct {
		name    string
		uris    []*url.URL
		wantErr string
	}{
		{"one id", []*url.URL{id.URL()}, ""},
		{"ignores other schemes", []*url.URL{web, id.URL()}, ""},
		{"none", nil, "no spiffe id"},
		{"two", []*url.URL{id.URL(), other.URL()}, "2 spiffe ids"},
	} {
		got, err := FromCertificate(&x509.Certificate{URIs: tc.uris})
		switch {
		case tc.wantErr == "" && (err != nil || got != id):
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, id)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, %v; want error %q", tc.name, got, err, tc.wantErr)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/agents/sa/planner")
	f.Add("spiffe://x/ns/y/sa/")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(id.String())
		if err != nil || again != id {
			t.Fatalf("Parse(%q) = %v, but its String %q parses to %v, %v", s, id, id.String(), again, err)
		}
	})
}
