package bench

import (
	"math"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/test/bench/benchkube"
)

// Percentile is benchkube.Percentile: the p-th percentile of sorted
// (nearest rank), 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	return benchkube.Percentile(sorted, p)
}

// Summary is what the latency client reports.
type Summary struct {
	Mode       string  `json:"mode"`
	Scheduled  int     `json:"scheduled"`
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	Behind     int     `json:"behind"` // sent late, measured from the due time
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// summarize sorts samples in place and fills the latency fields of s.
func summarize(s *Summary, samples []time.Duration) {
	slices.Sort(samples)
	s.Count = len(samples)
	s.Errors = s.Scheduled - s.Count
	s.P50us = micros(Percentile(samples, 50))
	s.P90us = micros(Percentile(samples, 90))
	s.P99us = micros(Percentile(samples, 99))
	s.Maxus = micros(Percentile(samples, 100))
}

func micros(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)*10) / 10
}

// BulkResult is what the bulk client reports.
type BulkResult struct {
	Mode    string  `json:"mode"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Gbps    float64 `json:"gbit_per_s"`
}

func gbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds() / 1e9
}
