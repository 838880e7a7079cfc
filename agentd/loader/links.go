package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

var cgroupAttach = map[string]ebpf.AttachType{
	bpf.ProgConnect4: ebpf.AttachCGroupInet4Connect,
	bpf.ProgConnect6: ebpf.AttachCGroupInet6Connect,
	bpf.ProgSockOps:  ebpf.AttachCGroupSockOps,

	bpf.ProgDNSConnect4:     ebpf.AttachCGroupInet4Connect,
	bpf.ProgDNSConnect6:     ebpf.AttachCGroupInet6Connect,
	bpf.ProgDNSSendmsg4:     ebpf.AttachCGroupUDP4Sendmsg,
	bpf.ProgDNSSendmsg6:     ebpf.AttachCGroupUDP6Sendmsg,
	bpf.ProgDNSRecvmsg4:     ebpf.AttachCGroupUDP4Recvmsg,
	bpf.ProgDNSRecvmsg6:     ebpf.AttachCGroupUDP6Recvmsg,
	bpf.ProgDNSGetpeername4: ebpf.AttachCgroupInet4GetPeername,
	bpf.ProgDNSGetpeername6: ebpf.AttachCgroupInet6GetPeername,
}

// attachCgroupLinks attaches connect4/6, sockops and the DNS programs to cgroup, or, when
// their links are pinned already, updates those links to the new programs
// (atomically: capture never stops).
func (d *Datapath) attachCgroupLinks(cgroup string) error {
	for name, at := range cgroupAttach {
		if err := d.attachCgroupLink(name, at, cgroup); err != nil {
			return err
		}
	}
	return nil
}

// attachCgroupLink attaches program name to cgroup and pins the link, or
// updates the pinned link to the program.
func (d *Datapath) attachCgroupLink(name string, at ebpf.AttachType, cgroup string) error {
	prog := d.objs.Programs[name]
	l, err := link.LoadPinnedLink(bpf.LinkPin(d.pinDir, name), nil)
	if err == nil {
		d.links[name] = l
		if err := checkLinkCgroup(l, cgroup); err != nil {
			return fmt.Errorf("pinned link %s: %w", name, err)
		}
		if err := l.Update(prog); err != nil {
			return fmt.Errorf("update pinned link %s: %w", name, err)
		}
		d.log.Debug("updated pinned link", "link", name)
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", name, err)
	}
	if l, err = link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: prog}); err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, cgroup, err)
	}
	d.links[name] = l
	if err := l.Pin(bpf.LinkPin(d.pinDir, name)); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return &FeatureError{Feature: "cgroup bpf links", Err: err}
		}
		return fmt.Errorf("pin link %s: %w", name, err)
	}
	return nil
}

// checkLinkCgroup fails when the cgroup link l is attached to another
// cgroup than path (a cgroup's id is its inode number in cgroup2).
func checkLinkCgroup(l link.Link, path string) error {
	info, err := l.Info()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat cgroup: %w", err)
	}
	if cg := info.Cgroup(); cg == nil || cg.CgroupId != st.Ino {
		return fmt.Errorf("attached to another cgroup than %s (run cleanup first)", path)
	}
	return nil
}

// reloadSkLookupLinks opens the pinned per-netns links and updates them to
// the new sk_lookup program; links of namespaces that are gone are removed
// together with their enrolled_netns entry.
func (d *Datapath) reloadSkLookupLinks() error {
	entries, err := os.ReadDir(d.pinDir + "/" + bpf.LinksDir)
	if err != nil {
		return fmt.Errorf("read links dir: %w", err)
	}
	for _, e := range entries {
		cookie, ok := skLookupCookie(e.Name())
		if !ok {
			continue
		}
		l, err := link.LoadPinnedLink(bpf.LinkPin(d.pinDir, e.Name()), nil)
		if err != nil {
			return fmt.Errorf("open pinned link %s: %w", e.Name(), err)
		}
		err = l.Update(d.objs.Programs[bpf.ProgSkLookup])
		if errors.Is(err, unix.ENOLINK) {
			d.log.Info("netns gone, unenrolling", "netns_cookie", cookie)
			d.links[e.Name()] = l
			if err := d.unenrollLocked(cookie); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return errors.Join(fmt.Errorf("update pinned link %s: %w", e.Name(), err), l.Close())
		}
		d.links[e.Name()] = l
	}
	return nil
}

func skLookupCookie(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, bpf.SkLookupLinkPrefix)
	if !ok {
		return 0, false
	}
	c, err := strconv.ParseUint(s, 10, 64)
	return c, err == nil
}
