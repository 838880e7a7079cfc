package meshconfig

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func workload(uid, name, node string, ips ...string) Workload {
	w := Workload{UID: uid, Name: name, Namespace: "agents", ServiceAccount: name, Node: node, Enrolled: true}
	for _, ip := range ips {
		w.IPs = append(w.IPs, netip.MustParseAddr(ip))
	}
	return w
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ws      []Workload
		wantErr string
	}{
		{"ok", []Workload{workload("1", "a", "n1", "198.19.1.2", "fd00:19:1::2"), workload("2", "b", "n2", "198.19.2.2")}, ""},
		{"missing field", []Workload{{UID: "1", Name: "a"}}, "are required"},
		{"duplicate uid", []Workload{workload("1", "a", "n1"), workload("1", "b", "n1")}, "duplicate uid"},
		{"duplicate uid, unsorted", []Workload{workload("2", "a", "n1"), workload("1", "b", "n1"), workload("2", "c", "n1")}, "duplicate uid"},
		{"duplicate uid after an invalid one", []Workload{workload("1", "a", "n1"), {UID: "1"}, workload("1", "c", "n1")}, `agents/c: duplicate uid "1"`},
		{"duplicate ip", []Workload{workload("1", "a", "n1", "198.19.1.2"), workload("2", "b", "n1", "198.19.1.2")}, "already belongs to agents/a"},
		{"v4-mapped duplicate", []Workload{workload("1", "a", "n1", "198.19.1.2"), workload("2", "b", "n1", "::ffff:198.19.1.2")}, "already belongs"},
	} {
		c := Config{Workloads: tc.ws}
		err := c.Validate()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: Validate() = %v; want %q", tc.name, err, tc.wantErr)
		}
		if c.TrustDomain != "cluster.local" {
			t.Errorf("%s: trust domain defaulted to %q", tc.name, c.TrustDomain)
		}
	}
}

func TestIndex(t *testing.T) {
	c := &Config{TrustDomain: "td", Workloads: []Workload{
		workload("1", "a", "n1", "198.19.1.2", "fd00:19:1::2"),
		workload("2", "b", "n2", "198.19.2.2"),
	}}
	x := NewIndex(c)
	if w := x.ByIP(netip.MustParseAddr("::ffff:198.19.1.2")); w == nil || w.UID != "1" {
		t.Errorf("ByIP(v4-mapped) = %v; want a", w)
	}
	if w := x.ByIP(netip.MustParseAddr("fd00:19:1::2")); w == nil || w.UID != "1" {
		t.Errorf("ByIP(v6) = %v; want a", w)
	}
	if w := x.ByIP(netip.MustParseAddr("198.19.9.9")); w != nil {
		t.Errorf("ByIP(unknown) = %v; want nil", w)
	}
	if w := x.ByUID("2"); w == nil || w.Name != "b" {
		t.Errorf("ByUID(2) = %v", w)
	}
	if on := x.OnNode("n2"); len(on) != 1 || on[0].UID != "2" {
		t.Errorf("OnNode(n2) = %v", on)
	}
	if got := c.Identity(x.ByUID("1")).String(); got != "spiffe://td/ns/agents/sa/a" {
		t.Errorf("Identity = %s", got)
	}
}

// TestWatchKeepsLastGood: Watch applies each new valid file once and keeps
// the last good config when the file turns invalid.
func TestWatchKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.json")
	good := &Config{TrustDomain: "td", Workloads: []Workload{workload("1", "a", "n1", "198.19.1.2")}}
	if err := Save(path, good); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	applied := make(chan *Config, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, path, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), func(c *Config) { applied <- c })
	}()
	defer func() { cancel(); <-done }()
	if c := <-applied; len(c.Workloads) != 1 {
		t.Fatalf("first config: %+v", c)
	}
	if err := os.WriteFile(path, []byte(`{"workloads":[{"uid":"x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case c := <-applied:
		t.Fatalf("invalid config applied: %+v", c)
	default:
	}
	good.Workloads = append(good.Workloads, workload("2", "b", "n1", "198.19.1.3"))
	if err := Save(path, good); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-applied:
		if len(c.Workloads) != 2 {
			t.Fatalf("second config: %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("valid config after an invalid one was not applied")
	}
}
