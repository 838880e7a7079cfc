package meshlab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// SendResult is what `app send` prints.
type SendResult struct {
	To        string  `json:"to"`
	Local     string  `json:"local,omitempty"`
	Bytes     int     `json:"bytes"`
	EchoOK    bool    `json:"echo_ok"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

// appSend is `app send --to ADDR --payload STR`: connect, write the
// payload, read the echo, print a JSON result. A failure is still printed,
// and returned.
func appSend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app send", flag.ContinueOnError)
	to := fs.String("to", "", "address to send to (host:port)")
	payload := fs.String("payload", "hello", "bytes to send")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	network := fs.String("network", "tcp", "tcp, tcp4 or tcp6 (which family a name resolves to)")
	mark := fs.Uint("mark", 0, "set this SO_MARK on the socket (the mesh's mark makes the capture let it pass: a pod sending plaintext past its tunnel, as one with CAP_NET_ADMIN could)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" {
		return fmt.Errorf("%w: --to is required", ErrUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *network != "tcp" && *network != "tcp4" && *network != "tcp6" {
		return fmt.Errorf("%w: --network %q: want tcp, tcp4 or tcp6", ErrUsage, *network)
	}
	res := sendMarked(ctx, *network, *to, []byte(*payload), uint32(*mark))
	if err := writeJSON(stdout, res); err != nil {
		return err
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

// send does one round trip.
func send(ctx context.Context, to string, payload []byte) SendResult {
	return sendMarked(ctx, "tcp", to, payload, 0)
}

// sendMarked does one round trip over network (tcp, tcp4, tcp6) on a
// socket with SO_MARK mark (none: 0).
func sendMarked(ctx context.Context, network, to string, payload []byte, mark uint32) SendResult {
	res := SendResult{To: to}
	start := time.Now()
	var d net.Dialer
	if mark != 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.DialContext(ctx, network, to)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer c.Close()
	res.Local = c.LocalAddr().String()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(payload); err != nil {
		res.Error = "write: " + err.Error()
		return res
	}
	got := make([]byte, len(payload))
	n, err := io.ReadFull(c, got)
	res.Bytes, res.LatencyMS = n, float64(time.Since(start).Microseconds())/1000
	if err != nil {
		res.Error = "read echo: " + err.Error()
		return res
	}
	res.EchoOK = string(got) == string(payload)
	if !res.EchoOK {
		res.Error = "echo differs from payload"
	}
	return res
}
