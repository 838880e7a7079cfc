package bench

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample any p", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99.9 of 1..100 rounds up to max", ms(hundred...), 99.9, 100 * time.Millisecond},
		{"p50 of 1..4 is 2nd", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of 1..4 is 3rd", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p50 of 1..5 is 3rd", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p99 of 10 is max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is min", ms(1, 2, 3), 0.001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeSortsAndCountsErrors(t *testing.T) {
	samples := []time.Duration{3 * time.Millisecond, 1 * time.Millisecond, 2 * time.Millisecond}
	s := Summary{Scheduled: 5}
	summarize(&s, samples)
	want := Summary{Scheduled: 5, Count: 3, Errors: 2, P50us: 2000, P90us: 3000, P99us: 3000, Maxus: 3000}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
}

func TestGbps(t *testing.T) {
	if got := gbps(1e9/8, time.Second); got != 1 {
		t.Errorf("gbps(125 MB, 1s) = %v, want 1", got)
	}
	if got := gbps(1, 0); got != 0 {
		t.Errorf("gbps(1, 0) = %v, want 0", got)
	}
}

func TestScheduleDue(t *testing.T) {
	start := time.Unix(1000, 0)
	s := schedule{start: start, rate: 400, total: 10, conns: 3}
	for j, want := range map[int]time.Duration{0: 0, 1: 2500 * time.Microsecond, 400: time.Second, 1000: 2500 * time.Millisecond} {
		if got := s.due(j).Sub(start); got != want {
			t.Errorf("due(%d) = start+%v, want start+%v", j, got, want)
		}
	}
}
