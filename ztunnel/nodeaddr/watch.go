package nodeaddr

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// resubscribeDelay is the pause before a lost subscription is renewed.
const resubscribeDelay = time.Second

// Run keeps the set current until ctx ends: it lists the addresses again
// on every announced change and every Resync. It returns nil when ctx
// ends, once the subscription's goroutines are gone.
func (s *Set) Run(ctx context.Context) error {
	t := time.NewTicker(s.o.Resync)
	defer t.Stop()
	for {
		if err := s.watch(ctx, t.C); err != nil {
			s.log.Warn("watching node addresses", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(resubscribeDelay):
		}
	}
}

// watch subscribes to address changes and refreshes on each (and on
// tick) until ctx ends or the subscription breaks (an overflowed socket).
func (s *Set) watch(ctx context.Context, tick <-chan time.Time) error {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	ns := s.nsHandle()
	var lost error
	err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ErrorCallback: func(err error) { lost = err },
	})
	if err != nil {
		close(done)
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	defer func() {
		close(done) // closes the socket: the reader goroutine closes ch
		for range ch {
		}
	}()
	if err := s.refresh(); err != nil { // changes before the subscription
		s.log.Warn("listing node addresses", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ch:
			if !ok {
				return fmt.Errorf("address subscription ended: %v", lost)
			}
			drain(ch)
		case <-tick:
		}
		if err := s.refresh(); err != nil {
			s.log.Warn("listing node addresses", "err", err)
		}
	}
}

// drain takes the announcements already queued: one listing covers them.
func drain(ch <-chan netlink.AddrUpdate) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
