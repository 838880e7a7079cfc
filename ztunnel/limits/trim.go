package limits

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"
)

// TrimMin is how far the carried connections must fall from their peak
// before the memory of a burst is handed back.
const TrimMin = 500

// Trimmer hands the memory of a burst back to the OS once it is over. Go
// frees the burst's heap only at its next GC cycles, and once the burst has
// ended nothing allocates enough to start one (the runtime forces one every
// two minutes); until then the process keeps its peak size. Not safe for
// concurrent use: one loop owns it.
type Trimmer struct {
	peak int64 // most connections carried since the last trim
}

// Due reports whether the memory should be trimmed now that n connections
// are carried: they fell by TrimMin or more, to half the peak or less.
func (t *Trimmer) Due(n int64) bool {
	if n > t.peak {
		t.peak = n
		return false
	}
	if t.peak-n >= TrimMin && n <= t.peak/2 {
		t.peak = n
		return true
	}
	return false
}

// TrimMemory runs the two GC cycles that empty sync.Pools (a pool keeps its
// objects for one more) and returns the freed memory to the OS.
func TrimMemory(log *slog.Logger) {
	start := time.Now()
	runtime.GC()
	debug.FreeOSMemory()
	log.Info("burst over: memory returned to the OS", "took_ms", time.Since(start).Milliseconds())
}
