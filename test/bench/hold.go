package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"time"
)

// HoldResult is what `bench-client hold` prints: a first line once every
// connection is open and echoed, and the same again when it closed them.
type HoldResult struct {
	Held   int  `json:"held"`
	Closed bool `json:"closed"`
}

// holdCommand opens --conns connections (--parallel at a time), echoes one
// --size frame on each, prints a HoldResult line, keeps them open until
// --hold passed or ctx ends (SIGTERM), closes them and prints again.
func holdCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(ClientCommand+" hold", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	to := fs.String("to", "", "server address HOST:PORT")
	n := fs.Int("conns", 1000, "connections to hold")
	size := fs.Int("size", 1024, "payload bytes echoed on each")
	hold := fs.Duration("hold", time.Minute, "how long to hold them at most")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	if *to == "" || *n < 1 || *n > maxHeld || *size < 1 || *size > MaxFrame {
		return fmt.Errorf("hold: want --to, 1 <= --conns <= %d, 1 <= --size <= %d", maxHeld, MaxFrame)
	}
	conns, err := dialAll(ctx, *to, *n)
	if err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	payload := make([]byte, *size)
	fillPayload(payload, 1)
	for _, c := range conns {
		if err := echoOnce(c, payload); err != nil {
			return fmt.Errorf("hold: echo: %w", err)
		}
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(HoldResult{Held: len(conns)}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(*hold):
	}
	for _, c := range conns {
		c.Close()
	}
	return enc.Encode(HoldResult{Held: len(conns), Closed: true})
}

// maxHeld bounds hold's connections (a process has 20000 fds here).
const maxHeld = 15000

// echoOnce sends payload as one frame and reads its echo.
func echoOnce(c net.Conn, payload []byte) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if err := writeFrame(c, payload); err != nil {
		return err
	}
	got, err := readFrame(c, nil)
	if err != nil {
		return err
	}
	if len(got) != len(payload) {
		return fmt.Errorf("echo of %d bytes came back with %d", len(payload), len(got))
	}
	return nil
}
