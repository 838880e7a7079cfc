package meshconfig

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"time"
)

// Watch reads path every interval and calls apply with each new valid
// config, the first one included. An invalid file is logged and the last
// good config stays in force. It returns when ctx is done.
func Watch(ctx context.Context, path string, interval time.Duration, log *slog.Logger, apply func(*Config)) {
	var last []byte
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		data, err := os.ReadFile(path)
		switch {
		case err != nil:
			log.Warn("read mesh config", "path", path, "err", err)
		case !bytes.Equal(data, last):
			last = data
			if c, err := Parse(data); err != nil {
				log.Error("ignoring invalid mesh config, keeping the last good one", "path", path, "err", err)
			} else {
				apply(c)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
