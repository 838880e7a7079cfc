package l7

import (
	"testing"
	"time"
)

// TestRetryWait: the wait before retry n doubles from the base up to the
// ceiling (10 times the base unless set; never below the base).
func TestRetryWait(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		r    Retry
		want []time.Duration // retries 1, 2, ...
	}{
		{Retry{}, []time.Duration{25 * ms, 50 * ms, 100 * ms, 200 * ms, 250 * ms, 250 * ms}},
		{Retry{Backoff: 10 * ms}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 100 * ms}},
		{Retry{Backoff: 10 * ms, MaxBackoff: 30 * ms}, []time.Duration{10 * ms, 20 * ms, 30 * ms, 30 * ms}},
		{Retry{MaxBackoff: time.Second}, []time.Duration{25 * ms, 50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second}},
		{Retry{Backoff: 100 * ms, MaxBackoff: 10 * ms}, []time.Duration{100 * ms, 100 * ms}},
		{Retry{Backoff: 1000 * time.Hour, MaxBackoff: 5000 * time.Hour}, []time.Duration{1000 * time.Hour, 2000 * time.Hour, 4000 * time.Hour, 5000 * time.Hour, 5000 * time.Hour}},
	} {
		for i, want := range tc.want {
			if got := tc.r.wait(i + 1); got != want {
				t.Errorf("%+v: retry %d waits %s, want %s", tc.r, i+1, got, want)
			}
		}
	}
	if got := (&Retry{}).wait(1000); got != 250*ms {
		t.Errorf("retry 1000 waits %s, want the ceiling", got)
	}
}
