// Package logging is the --log-format and --log-level flags every AgentMesh
// process takes, and the logger they make.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Flags are the logging flags; the zero value is JSON at info level.
type Flags struct {
	Format string // "json" (default) or "text"
	Level  slog.Level
}

// Register adds --log-format and --log-level to fs. A bad value fails the
// parse with a message naming the flag.
func (f *Flags) Register(fs *flag.FlagSet) {
	if f.Format == "" {
		f.Format = "json"
	}
	fs.Var((*formatValue)(&f.Format), "log-format", "log format: json or text")
	fs.Var((*levelValue)(&f.Level), "log-level", "log level: debug, info, warn or error")
}

// Logger is the process logger writing to w.
func (f Flags) Logger(w io.Writer) *slog.Logger {
	o := &slog.HandlerOptions{Level: f.Level}
	if f.Format == "text" {
		return slog.New(slog.NewTextHandler(w, o))
	}
	return slog.New(slog.NewJSONHandler(w, o))
}

type formatValue string

func (v *formatValue) String() string { return string(*v) }

func (v *formatValue) Set(s string) error {
	if s != "json" && s != "text" {
		return fmt.Errorf("bad --log-format %q (want json or text)", s)
	}
	*v = formatValue(s)
	return nil
}

type levelValue slog.Level

func (v *levelValue) String() string { return slog.Level(*v).String() }

func (v *levelValue) Set(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("bad --log-level %q (want debug, info, warn or error)", s)
	}
	*v = levelValue(l)
	return nil
}
