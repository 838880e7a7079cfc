package bench

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestWriteTable(t *testing.T) {
	opts := Options{Rate: 500, Conns: 8, Size: 1024, Duration: 5 * time.Second, BulkBytes: 256 << 20}
	lat := func(p50, p90, p99 float64) Summary {
		return Summary{Scheduled: 2500, Count: 2500, P50us: p50, P90us: p90, P99us: p99, Maxus: 2 * p99}
	}
	results := []Result{
		{Scenario: Scenarios[0], Path: "direct", Latency: lat(40, 50, 80), Bulk: BulkResult{Bytes: 1, Gbps: 20}},
		{Scenario: Scenarios[1], Path: "direct", Latency: lat(20, 25, 40), Bulk: BulkResult{Bytes: 1, Gbps: 40}},
		{Scenario: Scenarios[2], Path: "hbone+mtls", Latency: lat(84, 110, 224), Bulk: BulkResult{Bytes: 1, Gbps: 8.2}},
		{Scenario: Scenarios[3], Err: errors.New("warm up: boom")},
		{Scenario: Scenarios[4], Path: "haproxy+mtls", Latency: lat(100, 120, 300), Bulk: BulkResult{Bytes: 1, Gbps: 5}},
	}
	var b strings.Builder
	WriteTable(&b, opts, results)
	want := `latency: 500 req/s over 8 connections, 1024-byte echo, 5s per scenario; throughput: 256 MiB on one stream; IPv4

scenario           path         requests errors  p50(us)  p90(us)  p99(us)  max(us) throughput(Gbit/s)
direct cross-node  direct           2500      0     40.0     50.0     80.0    160.0              20.00
direct same-node   direct           2500      0     20.0     25.0     40.0     80.0              40.00
mesh cross-node    hbone+mtls       2500      0     84.0    110.0    224.0    448.0               8.20
mesh same-node     ?                   -      -        -        -        -        -                  -
haproxy cross-node haproxy+mtls     2500      0    100.0    120.0    300.0    600.0               5.00

ratios to direct (latency > 1: slower than direct; throughput < 1: moves less):
  mesh cross-node vs direct cross-node: p50 x2.10 (+44us)  p90 x2.20  p99 x2.80  throughput x0.41
  mesh same-node vs direct same-node: p50 n/a (n/a)  p90 n/a  p99 n/a  throughput n/a
  haproxy cross-node vs direct cross-node: p50 x2.50 (+60us)  p90 x2.40  p99 x3.75  throughput x0.25
mesh same-node failed: warm up: boom
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--bin-dir", "/x", "--duration", "2s", "--rate", "1000", "--conns", "4",
		"--size", "64", "--bulk-bytes", "1048576", "--ipv6"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	got := Options{BinDir: o.BinDir, Duration: o.Duration, Rate: o.Rate, Conns: o.Conns, Size: o.Size, BulkBytes: o.BulkBytes, IPv6: o.IPv6}
	want := Options{BinDir: "/x", Duration: 2 * time.Second, Rate: 1000, Conns: 4, Size: 64, BulkBytes: 1 << 20, IPv6: true}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Options{})); diff != "" {
		t.Errorf("options (-want +got):\n%s", diff)
	}
	d, err := parseFlags(nil, &strings.Builder{})
	if err != nil || d.Duration != 5*time.Second || d.Rate != 500 || d.Conns != 8 || d.Size != 1024 || d.BulkBytes != 256<<20 || d.BinDir != defaultBinDir() {
		t.Errorf("defaults = %+v, %v", d, err)
	}
	for _, args := range [][]string{{"--rate", "0"}, {"--bulk-bytes", "0"}, {"--size", "2"}, {"extra"}} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestCommand(t *testing.T) {
	o := Options{BinDir: "/b"}
	if diff := cmp.Diff([]string{"/b/meshlab", ServerCommand, "--listen", ":9000"}, o.command(ServerCommand, "--listen", ":9000")); diff != "" {
		t.Errorf("default command (-want +got):\n%s", diff)
	}
	o.Command = []string{"/t/bench.test", "bench-helper"}
	if diff := cmp.Diff([]string{"/t/bench.test", "bench-helper", ClientCommand, "bulk"}, o.command(ClientCommand, "bulk")); diff != "" {
		t.Errorf("custom command (-want +got):\n%s", diff)
	}
	if len(o.Command) != 2 {
		t.Error("command changed Options.Command")
	}
}

func TestDecodeLastLine(t *testing.T) {
	var s Summary
	if err := decodeLastLine([]byte("noise\n{\"mode\":\"latency\",\"count\":3}\n\n"), &s); err != nil || s.Count != 3 {
		t.Errorf("decodeLastLine = %+v, %v", s, err)
	}
	for _, in := range []string{"", "\n", "not json\n"} {
		if err := decodeLastLine([]byte(in), &s); err == nil {
			t.Errorf("decodeLastLine(%q) accepted", in)
		}
	}
}

func TestWriteCost(t *testing.T) {
	opts := Options{Conns: 8, Size: 1024}
	results := []Result{
		{Scenario: Scenarios[0]},
		{Scenario: Scenarios[2], Cost: &ProxyCost{Procs: "ztunnel n1+n2", CPUPerGB: 1.234, LoadRate: 1000, LoadRSS: 48 << 20}},
		{Scenario: Scenarios[4], Cost: &ProxyCost{Procs: "haproxy x2", CPUPerGB: 0.5, LoadRate: 1000}},
	}
	var b strings.Builder
	writeCost(&b, opts, results)
	want := `
proxy cost: CPU of the carrying processes over the throughput run, per GB moved; their RSS (summed, largest sample) under 1000 req/s of 1024-byte echoes over 8 connections for 3s
scenario           processes           cpu(s)/GB      rss at load (MiB)
mesh cross-node    ztunnel n1+n2            1.23                  48.00
haproxy cross-node haproxy x2               0.50                      -
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("cost table (-want +got):\n%s", diff)
	}
	b.Reset()
	writeCost(&b, opts, results[:1])
	if b.Len() != 0 {
		t.Errorf("no proxied scenario: printed %q", b.String())
	}
}
