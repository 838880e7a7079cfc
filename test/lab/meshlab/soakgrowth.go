package meshlab

import (
	"errors"
	"fmt"
	"slices"
)

// margin is how far a series may grow over a soak: the late median may
// exceed the early one by abs, or by rel of the early one, whichever is
// larger.
type margin struct {
	abs, rel float64
}

func (m margin) limit(early float64) float64 { return early + max(m.abs, m.rel*early) }

// series is one figure sampled over a soak ("n1 ztunnel fds").
type series struct {
	name   string
	values []float64
	margin margin
}

// growth is the verdict on one series.
type growth struct {
	name               string
	early, late, limit float64
}

func (g growth) ok() bool { return g.late <= g.limit }

// windows are the samples compared: [early, early+size) and the last size.
type windows struct {
	early, late, size int
}

// errTooShort says a soak had too few samples after its warm-up to judge.
var errTooShort = errors.New("too few samples after the warm-up to compare an early and a late window")

// compareWindows picks the windows among n samples of which the first
// skip are the warm-up: each a quarter of the rest, at least three
// samples, not overlapping.
func compareWindows(n, skip int) (windows, error) {
	rest := n - skip
	size := max(3, rest/4)
	if skip < 0 || rest < 2*size {
		return windows{}, fmt.Errorf("%w: %d samples, %d of them warm-up", errTooShort, n, skip)
	}
	return windows{early: skip, late: n - size, size: size}, nil
}

// checkGrowth compares the median of each series' early window with that
// of its late window: a median, so that a sample taken during a burst
// does not decide.
func checkGrowth(all []series, w windows) []growth {
	var out []growth
	for _, s := range all {
		early := median(s.values[w.early : w.early+w.size])
		late := median(s.values[w.late : w.late+w.size])
		out = append(out, growth{name: s.name, early: early, late: late, limit: s.margin.limit(early)})
	}
	return out
}

// median of v (the mean of the middle two for an even count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
