package logging

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func parse(args ...string) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	return f, fs.Parse(args)
}

func TestFlags(t *testing.T) {
	f, err := parse()
	if err != nil || f.Format != "json" || f.Level != slog.LevelInfo {
		t.Errorf("defaults = %+v, %v; want json, info", f, err)
	}
	f, err = parse("--log-format", "text", "--log-level", "debug")
	if err != nil || f.Format != "text" || f.Level != slog.LevelDebug {
		t.Errorf("text/debug = %+v, %v", f, err)
	}
	var buf bytes.Buffer
	f.Logger(&buf).Debug("hello", "k", 1)
	if !strings.Contains(buf.String(), "level=DEBUG msg=hello k=1") {
		t.Errorf("text logger wrote %q", buf.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-format", "xml"}, `bad --log-format "xml" (want json or text)`},
		{[]string{"--log-level", "loud"}, `bad --log-level "loud"`},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.want)
		}
	}
}
