package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
)

// ServerCommand is the meshlab subcommand that runs Server.
const ServerCommand = "bench-server"

// Server runs the benchmark's server until ctx is done:
//
//	--listen :PORT             echo every frame back (latency)
//	--listen :PORT --discard   count and drop bulk bytes, then ack the total
func Server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(ServerCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "", "address to listen on, for example :9000")
	discard := fs.Bool("discard", false, "be the bulk sink instead of the echo server")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", ServerCommand, err)
	}
	if *listen == "" || fs.NArg() > 0 {
		return fmt.Errorf("%s: want --listen ADDR [--discard]", ServerCommand)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	handle := serveEcho
	if *discard {
		handle = serveDiscard
	}
	return serve(ctx, ln, handle)
}

// serve accepts connections on ln and runs handle for each until ctx is
// done; then it closes ln and every connection and waits for the handlers.
// It returns nil when ctx ended it.
func serve(ctx context.Context, ln net.Listener, handle func(net.Conn) error) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			ln.Close()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Go(func() {
			stopConn := context.AfterFunc(ctx, func() { c.Close() })
			defer stopConn()
			defer c.Close()
			_ = handle(c) // a broken connection is the client's to report
		})
	}
}

// serveEcho writes every frame back, flushing when no more input is
// buffered, so pipelined requests share writes.
func serveEcho(c net.Conn) error {
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	var buf []byte
	for {
		p, err := readFrame(br, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		buf = p
		if err := writeFrame(bw, p); err != nil {
			return err
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

// serveDiscard reads a bulk count, drops that many bytes and answers with
// the number received.
func serveDiscard(c net.Conn) error {
	want, err := readCount(c)
	if err != nil {
		return fmt.Errorf("read bulk count: %w", err)
	}
	got, err := drain(c, want)
	if err != nil {
		return fmt.Errorf("drain after %d of %d bytes: %w", got, want, noEOF(err))
	}
	return writeCount(c, got)
}

// drain reads and drops exactly n bytes from r with a large buffer (io.Discard's
// ReadFrom would read 8 KiB at a time).
func drain(r io.Reader, n int64) (int64, error) {
	buf := make([]byte, 256<<10)
	var got int64
	for got < n {
		k, err := r.Read(buf[:min(int64(len(buf)), n-got)])
		got += int64(k)
		if err != nil && got < n {
			return got, err
		}
	}
	return got, nil
}
