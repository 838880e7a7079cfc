package loader

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/agentmesh/agentmesh/bpf"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "loads eBPF programs (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testEnv is a throwaway cgroup and pin dir, removed on cleanup.
func testEnv(t *testing.T) Options {
	t.Helper()
	requireRoot(t)
	root, err := FindCgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(root, randomName("amtest-loader-"))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join(BPFFSPath, randomName("amtest-"))
	t.Cleanup(func() {
		if err := Cleanup(pinDir, nil); err != nil {
			t.Error(err)
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	return Options{PinDir: pinDir, CgroupPath: cg}
}

func open(t *testing.T, opts Options) *Datapath {
	t.Helper()
	d, err := Open(opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// newNetns makes a network namespace that lives until cleanup and returns
// a path to it.
func newNetns(t *testing.T) string {
	path, _ := newNetnsCloser(t)
	return path
}

// newNetnsCloser is newNetns that also returns a func that drops the test's
// reference to the netns early.
func newNetnsCloser(t *testing.T) (string, func()) {
	t.Helper()
	f := testutil.NewNetns(t)
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()), func() { f.Close() }
}

// linkIDs maps every pinned link name to its link ID.
func linkIDs(t *testing.T, pinDir string) map[string]link.ID {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(pinDir, bpf.LinksDir))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]link.ID{}
	for _, e := range entries {
		l, err := link.LoadPinnedLink(bpf.LinkPin(pinDir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[e.Name()] = info.ID
	}
	return ids
}

func TestOpenPinsEverything(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	var want []string
	for _, m := range []string{bpf.MapEnrolledNetns, bpf.MapOrigDstCookie, bpf.MapOrigDst, bpf.MapListeners, bpf.MapStats,
		bpf.MapDNSUpstream, bpf.MapDNSSock, bpf.MapDeliveries} {
		want = append(want, bpf.MapPin(opts.PinDir, m))
	}
	for _, p := range append(cgroupProgs(), bpf.ProgSkLookup) {
		want = append(want, bpf.ProgPin(opts.PinDir, p))
	}
	for _, l := range cgroupProgs() {
		want = append(want, bpf.LinkPin(opts.PinDir, l))
	}
	for _, p := range want {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("pin missing: %v", err)
		}
	}
	if d.PinDir() != opts.PinDir {
		t.Errorf("PinDir() = %q", d.PinDir())
	}
	out, err := exec.Command("bpftool", "map", "dump", "pinned", bpf.MapPin(opts.PinDir, bpf.MapStats)).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool: %v: %s", err, out)
	}
	for _, field := range []string{"connect_redirected", "lookup_dropped"} {
		if !strings.Contains(string(out), field) {
			t.Errorf("bpftool map dump of stats lacks field %q:\n%s", field, out)
		}
	}
	if _, err := d.Stats(); err != nil {
		t.Errorf("stats: %v", err)
	}
	// The links are attached to the test cgroup.
	out, err = exec.Command("bpftool", "cgroup", "show", opts.CgroupPath).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool cgroup show: %v: %s", err, out)
	}
	for _, at := range []string{"cgroup_inet4_connect", "cgroup_inet6_connect", "sock_ops",
		"cgroup_udp4_sendmsg", "cgroup_udp6_sendmsg", "cgroup_udp4_recvmsg", "cgroup_udp6_recvmsg",
		"cgroup_inet4_getpeername", "cgroup_inet6_getpeername"} {
		if !strings.Contains(string(out), at) {
			t.Errorf("cgroup lacks %s:\n%s", at, out)
		}
	}
}

func TestReopenKeepsState(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	ns := newNetns(t)
	cookie, err := d.Enroll(ns)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := d.Enroll(ns); err != nil || again != cookie {
		t.Fatalf("second enroll = %d, %v; want %d", again, err, cookie)
	}
	od, err := ebpf.LoadPinnedMap(bpf.MapPin(opts.PinDir, bpf.MapOrigDst), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer od.Close()
	key, val := make([]byte, od.KeySize()), make([]byte, od.ValueSize())
	key[0], val[0] = 7, 9 // any entry: it must survive the restart
	if err := od.Put(key, val); err != nil {
		t.Fatal(err)
	}
	before := linkIDs(t, opts.PinDir)
	if len(before) != len(cgroupProgs())+1 {
		t.Fatalf("links after enroll = %v, want %d cgroup links + 1 sk_lookup", before, len(cgroupProgs()))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := d.Enrolled(); err == nil {
		t.Error("Enrolled after Close succeeded")
	}

	d2 := open(t, opts)
	if got := linkIDs(t, opts.PinDir); !maps.Equal(got, before) {
		t.Errorf("link ids after reopen = %v, want %v", got, before)
	}
	if got, err := d2.Enrolled(); err != nil || !slices.Equal(got, []uint64{cookie}) {
		t.Errorf("enrolled after reopen = %v, %v; want [%d]", got, err, cookie)
	}
	got := make([]byte, od.ValueSize())
	if err := od.Lookup(key, got); err != nil || got[0] != 9 {
		t.Errorf("orig_dst entry after reopen = %v, %v", got, err)
	}
	// The links run the newly loaded programs.
	prog, err := ebpf.LoadPinnedProgram(bpf.ProgPin(opts.PinDir, bpf.ProgSkLookup), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	pinfo, _ := prog.Info()
	pid, _ := pinfo.ID()
	l, err := link.LoadPinnedLink(bpf.LinkPin(opts.PinDir, bpf.SkLookupLinkName(cookie)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if linfo, err := l.Info(); err != nil || linfo.Program != pid {
		t.Errorf("sk_lookup link runs program %v (%v), want the new one %v", linfo.Program, err, pid)
	}
}

func TestEnrollUnenroll(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	a, b := newNetns(t), newNetns(t)
	ca, err := d.Enroll(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := d.Enroll(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Enrolled()
	if want := []uint64{min(ca, cb), max(ca, cb)}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("enrolled = %v, %v; want %v", got, err, want)
	}
	pin := bpf.LinkPin(opts.PinDir, bpf.SkLookupLinkName(ca))
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := l.Info()
	l.Close()
	for range 2 { // idempotent
		if err := d.Unenroll(ca); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pin still there: %v", err)
	}
	waitLinkGone(t, info.ID)
	if got, _ := d.Enrolled(); !slices.Equal(got, []uint64{cb}) {
		t.Errorf("enrolled after unenroll = %v, want [%d]", got, cb)
	}
}

// waitLinkGone waits until the kernel has released link id.
func waitLinkGone(t *testing.T, id link.ID) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := link.NewFromID(id)
		if err != nil {
			return
		}
		l.Close()
		if time.Now().After(deadline) {
			t.Fatalf("link %d still exists", id)
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	if _, err := d.Enroll(newNetns(t)); err != nil {
		t.Fatal(err)
	}
	ids := linkIDs(t, opts.PinDir)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(opts.PinDir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(opts.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there: %v", err)
	}
	for _, id := range ids {
		waitLinkGone(t, id)
	}
	if err := Cleanup(opts.PinDir, nil); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

func TestCgroup2FromMountinfo(t *testing.T) {
	const mi = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
35 22 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
36 22 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
`
	got, err := cgroup2FromMountinfo(bufio.NewScanner(strings.NewReader(mi)))
	if err != nil || got != "/sys/fs/cgroup/unified" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := cgroup2FromMountinfo(bufio.NewScanner(strings.NewReader(mi[:40]))); err == nil {
		t.Error("no cgroup2 line: want error")
	}
	const esc = `1 0 0:1 / /mnt/my\040cg rw - cgroup2 none rw` + "\n"
	if got, _ := cgroup2FromMountinfo(bufio.NewScanner(strings.NewReader(esc))); got != "/mnt/my cg" {
		t.Errorf("escaped: got %q", got)
	}
}

func TestFeatureErrorWrapsNotSupported(t *testing.T) {
	err := error(&FeatureError{Feature: "sk_lookup programs", Err: errors.New("probe")})
	if !errors.Is(err, ebpf.ErrNotSupported) || !strings.Contains(err.Error(), "sk_lookup programs") {
		t.Errorf("%v", err)
	}
}

func TestReopenPrunesDeadNetns(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	ns, closeNS := newNetnsCloser(t)
	cookie, err := d.Enroll(ns)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	pin := bpf.LinkPin(opts.PinDir, bpf.SkLookupLinkName(cookie))
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	closeNS()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.NetNs().NetnsInode == 0 {
			break // the kernel has torn the netns down
		}
		if time.Now().After(deadline) {
			t.Fatal("netns not torn down")
		}
	}
	d2 := open(t, opts)
	if got, err := d2.Enrolled(); err != nil || len(got) != 0 {
		t.Errorf("enrolled = %v, %v; want none", got, err)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pin of dead netns still there: %v", err)
	}
}

func TestReopenOtherCgroupFails(t *testing.T) {
	opts := testEnv(t)
	d := open(t, opts)
	d.Close()
	other := testEnv(t)
	other.PinDir = opts.PinDir
	if d, err := Open(other); err == nil {
		d.Close()
		t.Fatal("open with pins attached to another cgroup succeeded")
	}
}

// cgroupProgs are the programs with a cgroup link: TCP capture and DNS.
func cgroupProgs() []string {
	return []string{bpf.ProgConnect4, bpf.ProgConnect6, bpf.ProgSockOps,
		bpf.ProgDNSConnect4, bpf.ProgDNSConnect6, bpf.ProgDNSSendmsg4, bpf.ProgDNSSendmsg6,
		bpf.ProgDNSRecvmsg4, bpf.ProgDNSRecvmsg6, bpf.ProgDNSGetpeername4, bpf.ProgDNSGetpeername6}
}
