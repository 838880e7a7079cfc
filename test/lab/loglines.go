package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// LogLine is one JSON log line of a daemon, decoded.
type LogLine map[string]any

// Str returns field k as a string ("" when absent or not a string).
func (l LogLine) Str(k string) string { s, _ := l[k].(string); return s }

// LogLines returns the JSON lines with msg msg of the log at path (lines
// that are not JSON are skipped).
func LogLines(path, msg string) ([]LogLine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	var out []LogLine
	s := bufio.NewScanner(bytes.NewReader(data))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		if !bytes.Contains(s.Bytes(), []byte(msg)) {
			continue
		}
		var line LogLine
		if json.Unmarshal(s.Bytes(), &line) == nil && line.Str("msg") == msg {
			out = append(out, line)
		}
	}
	return out, s.Err()
}

// WaitLogLine waits until the log at path has a line with msg msg that
// match accepts, and returns it.
func WaitLogLine(ctx context.Context, path, msg string, match func(LogLine) bool) (LogLine, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		lines, err := LogLines(path, msg)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no %q line in %s: %w", msg, path, context.Cause(ctx))
		case <-t.C:
		}
	}
}
