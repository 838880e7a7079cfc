package services

import (
	"errors"
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	r := &Result{Options: Options{Rate: 500, Conns: 8, Size: 1024, Concurrency: 8}, Rows: []Row{
		{Kind: Direct, Path: "direct", Latency: Latency{Scheduled: 10, Count: 10, P50us: 100, P90us: 200, P99us: 300},
			Connect: Connect{Connections: 40, Seconds: 1, PerSecond: 40, P50us: 1000, P99us: 2000}},
		{Kind: PodIP, Path: "hbone+mtls", Latency: Latency{Scheduled: 10, Count: 10, P50us: 400, P90us: 600, P99us: 900},
			Connect: Connect{Connections: 10, Seconds: 1, PerSecond: 10, P50us: 4000, P99us: 8000}},
		{Kind: VIP, Err: errors.New("warm up: refused")},
	}}
	var b strings.Builder
	WriteTable(&b, r)
	out := b.String()
	for _, want := range []string{
		"mesh pod IP / direct:    p50 x4.00  p90 x3.00  p99 x3.00  conns/s x0.25  conn p50 x4.00  conn p99 x4.00",
		"mesh VIP / direct:       p50 n/a",
		"mesh VIP     ?                          -      -        -",
		"mesh VIP failed: warm up: refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
