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

// TestReadProcStatsCountsPipes: a new pipe's two fds show as pipes.
func TestReadProcStatsCountsPipes(t *testing.T) {
	before, err := ReadProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	after, err := ReadProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.Pipes != before.Pipes+2 || after.FDs != before.FDs+2 {
		t.Errorf("pipes %d -> %d, fds %d -> %d after os.Pipe: want both +2", before.Pipes, after.Pipes, before.FDs, after.FDs)
	}
}
