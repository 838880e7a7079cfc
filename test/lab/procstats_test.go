package lab

import (
	"os"
	"testing"
	"time"
)

// TestReadCPU reads this process's CPU time, which grows while it spins.
func TestReadCPU(t *testing.T) {
	before, err := ReadCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	spinUntil := time.Now().Add(300 * time.Millisecond)
	x := 0
	for time.Now().Before(spinUntil) {
		x++
	}
	after, err := ReadCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// At least a tick (10 ms) of the 300 ms of spinning must show.
	if after-before < 10*time.Millisecond {
		t.Errorf("cpu %v -> %v after spinning %d rounds: did not grow", before, after, x)
	}
	if _, err := ReadCPU(-1); err == nil {
		t.Error("ReadCPU of pid -1: no error")
	}
}
