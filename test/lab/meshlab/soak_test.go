package meshlab

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSoakShort runs `meshlab soak` for 30s with small intervals against
// freshly built binaries (needs root): it prints a line per sample, a
// growth table and the calls, passes, and leaves nothing behind.
func TestSoakShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := labBinaries(ctx, t, "the soak runs a lab")
	var out bytes.Buffer
	err := Run(ctx, []string{"soak", "--bin-dir", bin, "--duration", "30s", "--sample", "3s", "--warmup", "9s",
		"--burst-every", "9s", "--burst-conns", "100", "--churn-every", "9s"}, &out)
	text := out.String()
	t.Log("\n" + text)
	if err != nil {
		t.Fatalf("soak: %v", err)
	}
	if n := len(regexp.MustCompile(`(?m)^ +\d+:\d\d \|`).FindAllString(text, -1)); n < 10 {
		t.Errorf("%d sample lines, want 11", n)
	}
	for _, want := range []string{"n2 orig_dst entries", "n1 ztunnel goroutines", "soak PASSED", "nothing left",
		"pods added and removed         3 ok     0 failed", "streams                        3 of 3 ran to the end"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the output", want)
		}
	}
}

func TestSoakFlags(t *testing.T) {
	o, err := parseSoakFlags([]string{"--duration", "3m"})
	if err != nil || o.warmup != 30*time.Second || o.sample != 10*time.Second {
		t.Errorf("3m: %+v, %v; want a warm-up of 30s", o, err)
	}
	if o, err := parseSoakFlags(nil); err != nil || o.duration != 30*time.Minute || o.warmup != 5*time.Minute {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--duration", "30s"}, // 4 samples: no room for two windows after the warm-up
		{"--sample", "0s"},
		{"--burst-conns", "0"},
		{"extra"},
	} {
		if _, err := parseSoakFlags(args); !errors.Is(err, ErrUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
