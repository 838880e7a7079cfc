package lab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records the TCP segments crossing the wire: an AF_PACKET socket
// (ETH_P_ALL) in the wire netns, bound to no interface so it sees every
// bridge port, keeping only frames received on a port (not the copy sent
// out of the other port), so each segment is seen once.
type Capture struct {
	fd   int
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex // guards segs and err
	segs []Segment
	err  error
}

// Capture starts capturing on the wire. Call Stop to end it (Close also
// stops it).
func (l *Lab) Capture(_ context.Context) (*Capture, error) {
	fd := -1
	err := doInNetns(l.wireName(), func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open capture socket: %w", err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set capture timeout: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	c := &Capture{fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		unix.Close(fd)
		return nil, errors.New("lab closed")
	}
	l.captures = append(l.captures, c)
	go c.loop()
	return c, nil
}

// captureDrain bounds how long Stop keeps reading queued frames.
const captureDrain = 500 * time.Millisecond

// loop reads frames until Stop, then drains what the socket still queues
// (frames that crossed the wire before Stop but were not read yet) until a
// receive times out, for at most captureDrain.
func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 256<<10)
	var drainUntil time.Time // set by Stop; bounded, as traffic may go on
	for {
		if drainUntil.IsZero() {
			select {
			case <-c.stop:
				drainUntil = time.Now().Add(captureDrain)
			default:
			}
		} else if time.Now().After(drainUntil) {
			return
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) && !drainUntil.IsZero() {
			return
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("capture: %w", err)
			c.mu.Unlock()
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if seg, ok := parseFrame(buf[:min(n, len(buf))]); ok {
			c.mu.Lock()
			c.segs = append(c.segs, seg)
			c.mu.Unlock()
		}
	}
}

// Segments returns a copy of what has been captured so far.
func (c *Capture) Segments() []Segment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Segment(nil), c.segs...)
}

// Stop ends the capture and returns every segment that crossed the wire
// before it, and the error that ended it early, if any. It is idempotent.
func (c *Capture) Stop() ([]Segment, error) {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		unix.Close(c.fd)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Segment(nil), c.segs...), c.err
}

// htons converts a short to network byte order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
