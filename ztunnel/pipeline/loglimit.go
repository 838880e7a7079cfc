package pipeline

import (
	"sync"
	"time"
)

// logInterval is how often a logLimit lets a line per key through.
const logInterval = time.Second

// logLimit lets one line per key through per interval and counts the ones
// it held back, so a failing Service under load is logged, not flooded.
type logLimit struct {
	mu   sync.Mutex
	keys map[string]*limited
}

type limited struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line for key may be written now, and how many
// were held back since the last one.
func (l *logLimit) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*limited{}
	}
	k := l.keys[key]
	if k == nil {
		if len(l.keys) >= 4096 { // bounded: forget the quiet ones
			for key, v := range l.keys {
				if now.Sub(v.last) > logInterval {
					delete(l.keys, key)
				}
			}
		}
		k = &limited{}
		l.keys[key] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < logInterval {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return true, n
}
