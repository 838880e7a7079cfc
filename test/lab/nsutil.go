package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// createNetns makes the named netns /run/netns/<name> (like `ip netns add`)
// with DAD off and forwarding on, and returns a handle to it. The creating
// thread is moved back to its original netns; if that fails it stays locked
// and dies with its goroutine.
func createNetns(name string, forwarding bool) (vnetns.NsHandle, error) {
	if err := ensureNetnsDir(); err != nil {
		return vnetns.None(), err
	}
	type result struct {
		h   vnetns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		h, err := vnetns.NewNamed(name)
		if err != nil {
			// NewNamed may have switched before failing; go back either way.
			if serr := vnetns.Set(orig); serr != nil {
				ch <- result{err: fmt.Errorf("create netns %s: %w", name, err)}
				return
			}
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("create netns %s: %w", name, err)}
			return
		}
		serr := setNetnsSysctls(forwarding)
		if err := vnetns.Set(orig); err != nil {
			h.Close()
			ch <- result{err: fmt.Errorf("return from netns %s: %w", name, err)}
			return
		}
		runtime.UnlockOSThread()
		if serr != nil {
			h.Close()
			ch <- result{err: fmt.Errorf("netns %s: %w", name, serr)}
			return
		}
		ch <- result{h: h}
	}()
	r := <-ch
	return r.h, r.err
}

// setNetnsSysctls runs in the new netns: no DAD (so IPv6 addresses work at
// once), and optionally forwarding for both families. /proc/sys/net shows
// the netns of the thread that opens it.
func setNetnsSysctls(forwarding bool) error {
	set := map[string]string{
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv6/conf/default/accept_dad": "0",
	}
	if forwarding {
		set["net/ipv4/ip_forward"] = "1"
		set["net/ipv6/conf/all/forwarding"] = "1"
	}
	for k, v := range set {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}

// deleteNetns removes the named netns; a missing one is not an error.
func deleteNetns(name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := vnetns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// handleAt opens a netlink handle working inside the netns h.
func handleAt(h vnetns.NsHandle) (*netlink.Handle, error) {
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return nl, nil
}

// setLoUp brings lo up in the netns behind nl.
func setLoUp(nl *netlink.Handle) error {
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// doInNetns runs fn on a locked thread inside the named netns.
func doInNetns(name string, fn func() error) error {
	return netns.DoPath(netnsPath(name), fn)
}

// openNetns opens the named netns.
func openNetns(name string) (vnetns.NsHandle, error) {
	h, err := vnetns.GetFromPath(netnsPath(name))
	if err != nil {
		return 0, fmt.Errorf("open netns %s: %w", name, err)
	}
	return h, nil
}
