package meshlab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// appEcho is `app echo --listen :8080[,:9090...] [--log-peers]`: a TCP
// echo server (IPv4 and IPv6) on every listed address that runs until ctx
// ends; with --log-peers it prints a line per connection it accepts,
// "accepted <local> from <peer>", as an app logging its callers would.
func appEcho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app echo", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "addresses to listen on, comma separated")
	logPeers := fs.Bool("log-peers", false, "print a line per accepted connection with its peer's address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	lns, err := listenAll(*listen)
	if err != nil {
		return err
	}
	errs := make(chan error, len(lns))
	var mu sync.Mutex // serialises the lines on stdout
	for _, ln := range lns {
		fmt.Fprintf(stdout, "echo listening on %s\n", ln.Addr())
		if *logPeers {
			ln = &peerLogger{Listener: ln, out: stdout, mu: &mu}
		}
		go func() { errs <- serveEcho(ctx, ln) }()
	}
	return collect(errs, len(lns))
}

// listenAll listens on every address of a comma separated list (all or
// none).
func listenAll(list string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, addr := range strings.Split(list, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveEcho echoes every connection on ln until ctx ends, then closes the
// listener and the open connections and waits for their goroutines.
func serveEcho(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	closeAll := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	}
	defer wg.Wait()
	defer closeAll()
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of fds or memory: keep serving the connections we
			// have and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			fmt.Fprintf(os.Stderr, "echo: accept: %v; retrying in %v\n", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			// Not io.Copy: TCP to TCP it splices through a pipe, two
			// more fds per connection for as long as it is open.
			_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4<<10))
		})
	}
}

// peerLogger prints the addresses of each connection its listener accepts.
type peerLogger struct {
	net.Listener
	out io.Writer
	mu  *sync.Mutex
}

func (l *peerLogger) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		fmt.Fprintf(l.out, "accepted %s from %s\n", c.LocalAddr(), c.RemoteAddr())
		l.mu.Unlock()
	}
	return c, err
}
