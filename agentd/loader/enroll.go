package loader

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Enroll captures the pod network namespace at netnsPath (for example
// /proc/PID/ns/net or /run/netns/NAME): its cookie goes into
// enrolled_netns and sk_lookup is attached to it (pinned as
// links/sk_lookup_<cookie>). Enrolling an enrolled netns does nothing.
func (d *Datapath) Enroll(netnsPath string) (uint64, error) {
	f, err := os.Open(netnsPath)
	if err != nil {
		return 0, fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	cookie, err := netns.Cookie(int(f.Fd()))
	if err != nil {
		return 0, fmt.Errorf("netns cookie of %s: %w", netnsPath, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, errClosed
	}
	name := bpf.SkLookupLinkName(cookie)
	if d.links[name] == nil {
		l, err := link.AttachNetNs(int(f.Fd()), d.objs.Programs[bpf.ProgSkLookup])
		if err != nil {
			return 0, fmt.Errorf("attach sk_lookup to %s: %w", netnsPath, err)
		}
		if err := l.Pin(bpf.LinkPin(d.pinDir, name)); err != nil {
			return 0, errors.Join(fmt.Errorf("pin link %s: %w", name, err), l.Close())
		}
		d.links[name] = l
	}
	if err := d.objs.Maps[bpf.MapEnrolledNetns].Put(cookie, uint8(1)); err != nil {
		return 0, errors.Join(fmt.Errorf("enroll netns %d: %w", cookie, err), d.unenrollLocked(cookie))
	}
	d.log.Info("enrolled", "netns", netnsPath, "netns_cookie", cookie)
	return cookie, nil
}

// Unenroll stops capturing the netns with the given cookie: the sk_lookup
// link is unpinned and detached and the enrolled_netns entry deleted.
// Unenrolling an unknown cookie does nothing.
func (d *Datapath) Unenroll(cookie uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errClosed
	}
	if err := d.unenrollLocked(cookie); err != nil {
		return err
	}
	d.log.Info("unenrolled", "netns_cookie", cookie)
	return nil
}

func (d *Datapath) unenrollLocked(cookie uint64) error {
	err := d.objs.Maps[bpf.MapEnrolledNetns].Delete(cookie)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unenroll netns %d: %w", cookie, err)
	}
	name := bpf.SkLookupLinkName(cookie)
	if l := d.links[name]; l != nil {
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpin link %s: %w", name, err)
		}
		delete(d.links, name)
		if err := l.Close(); err != nil {
			return fmt.Errorf("close link %s: %w", name, err)
		}
	}
	return nil
}

// Enrolled lists the cookies of the enrolled network namespaces, sorted.
func (d *Datapath) Enrolled() ([]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errClosed
	}
	var out []uint64
	var k uint64
	var v uint8
	it := d.objs.Maps[bpf.MapEnrolledNetns].Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list enrolled: %w", err)
	}
	slices.Sort(out)
	return out, nil
}
