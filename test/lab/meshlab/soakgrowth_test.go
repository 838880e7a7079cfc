package meshlab

import (
	"errors"
	"testing"
)

func TestCompareWindows(t *testing.T) {
	for _, tc := range []struct {
		n, skip int
		want    windows
		err     bool
	}{
		{n: 18, skip: 3, want: windows{early: 3, late: 15, size: 3}},
		{n: 180, skip: 30, want: windows{early: 30, late: 143, size: 37}},
		{n: 9, skip: 3, want: windows{early: 3, late: 6, size: 3}},
		{n: 8, skip: 3, err: true}, // 5 after the warm-up: two windows of 3 overlap
		{n: 4, skip: 6, err: true},
	} {
		got, err := compareWindows(tc.n, tc.skip)
		if tc.err {
			if !errors.Is(err, errTooShort) {
				t.Errorf("compareWindows(%d, %d) = %+v, %v; want too short", tc.n, tc.skip, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("compareWindows(%d, %d) = %+v, %v; want %+v", tc.n, tc.skip, got, err, tc.want)
		}
	}
}

func TestCheckGrowth(t *testing.T) {
	w := windows{early: 2, late: 7, size: 3}
	for _, tc := range []struct {
		name   string
		values []float64
		margin margin
		ok     bool
	}{
		// warm-up   early window      late window
		{"flat", []float64{99, 99, 40, 41, 40, 42, 43, 41, 40, 42}, margin{abs: 5}, true},
		{"one burst sample in each window", []float64{0, 0, 40, 900, 41, 40, 40, 41, 900, 40}, margin{abs: 5}, true},
		{"steady leak", []float64{10, 11, 20, 22, 24, 26, 28, 30, 32, 34}, margin{abs: 5}, false},
		{"within the relative margin", []float64{0, 0, 100, 100, 100, 0, 0, 109, 109, 109}, margin{abs: 1, rel: 0.1}, true},
		{"beyond the relative margin", []float64{0, 0, 100, 100, 100, 0, 0, 111, 111, 111}, margin{abs: 1, rel: 0.1}, false},
		{"a warm-up peak does not count", []float64{500, 500, 40, 40, 40, 40, 40, 40, 40, 40}, margin{}, true},
	} {
		g := checkGrowth([]series{{name: tc.name, values: tc.values, margin: tc.margin}}, w)
		if len(g) != 1 || g[0].ok() != tc.ok {
			t.Errorf("%s: %+v, want ok=%v", tc.name, g, tc.ok)
		}
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3 1 2 = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 1 3 2 = %v", m)
	}
}
