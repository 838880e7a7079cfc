package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestCloseSourceClosesOnlyThatSource(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{IdleTimeout: time.Hour})
	up := upstream(t, echo)
	gone, kept := e.target(idA, up), e.target(idA, up)
	gone.SrcIP = netip.MustParseAddr("127.0.0.2")
	g, k := e.dial(gone), e.dial(kept)
	defer g.Close()
	defer k.Close()
	e.dial(gone).Close() // an idle stream slot on the same conn
	if s := e.cli.Stats(); s != (PoolStats{Conns: 2, Streams: 2}) {
		t.Fatalf("stats %+v, want 2 conns with 2 streams", s)
	}
	e.cli.CloseSource(netip.MustParseAddr("::ffff:127.0.0.2")) // mapped form matches too

	readErr := make(chan error, 1)
	go func() { _, err := io.ReadAll(g); readErr <- err }()
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("stream from the closed source ended cleanly, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream from the closed source still open")
	}
	if s := e.cli.Stats(); s.Conns != 1 {
		t.Errorf("stats %+v, want only the other source's conn", s)
	}
	waitFor(t, "server sees the conn closed", func() bool { return e.server().Conns() == 1 })

	io.WriteString(k, "still here")
	buf := make([]byte, 10)
	if _, err := io.ReadFull(k, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("other source's stream: %q, %v", buf, err)
	}
	// The source can dial again: a fresh connection.
	e.dial(gone).Close()
	if s := e.cli.Stats(); s.Conns != 2 {
		t.Errorf("stats %+v after redial, want 2 conns", s)
	}
}

func TestCloseSourceFailsDialInProgress(t *testing.T) {
	e := newEnv(t, HandlerFunc(dialUpstream), ClientOptions{IdleTimeout: time.Hour})
	tg := e.target(idA, upstream(t, echo))
	started, proceed := make(chan struct{}), make(chan struct{})
	tg.Dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		close(started)
		<-proceed
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr.String())
	}
	dialErr := make(chan error, 1)
	go func() {
		c, err := e.cli.Dial(context.Background(), tg)
		if err == nil {
			c.Close()
		}
		dialErr <- err
	}()
	<-started
	e.cli.CloseSource(tg.SrcIP)
	close(proceed)
	if err := <-dialErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial raced by CloseSource: %v, want net.ErrClosed", err)
	}
	if s := e.cli.Stats(); s.Conns != 0 {
		t.Errorf("stats %+v: the raced connection was pooled", s)
	}
	waitFor(t, "server sees the raced conn closed", func() bool { return e.server().Conns() == 0 })
}
