package services

import (
	"cmp"
	"errors"
	"log/slog"
	"path/filepath"
	"time"
)

// Options size a run. Zero fields take the defaults in brackets.
type Options struct {
	// BinDir holds agentd, ztunnel, meshlab, controller and kube/.
	BinDir string
	// Latency: Rate requests/s [500] over Conns connections [8] for
	// Duration [5s], Size-byte echoes [1024] (also the new connections').
	Duration time.Duration
	Rate     float64
	Conns    int
	Size     int
	// New connections: Concurrency at once [8] for ConnectDuration [5s].
	ConnectDuration time.Duration
	Concurrency     int
	Logger          *slog.Logger // progress (nil: discard)
}

func (o Options) withDefaults() (Options, error) {
	o.Duration = cmp.Or(o.Duration, 5*time.Second)
	o.Rate = cmp.Or(o.Rate, 500)
	o.Conns = cmp.Or(o.Conns, 8)
	o.Size = cmp.Or(o.Size, 1024)
	o.ConnectDuration = cmp.Or(o.ConnectDuration, 5*time.Second)
	o.Concurrency = cmp.Or(o.Concurrency, 8)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BinDir == "":
		return o, errors.New("services bench: no bin dir")
	case o.Duration < 0 || o.ConnectDuration < 0 || o.Rate < 0 || o.Conns < 0 || o.Size < 0 || o.Concurrency < 0:
		return o, errors.New("services bench: negative size")
	}
	abs, err := filepath.Abs(o.BinDir)
	o.BinDir = abs
	return o, err
}

func (o Options) meshlab() string    { return filepath.Join(o.BinDir, "meshlab") }
func (o Options) kubeBinDir() string { return filepath.Join(o.BinDir, "kube") }
