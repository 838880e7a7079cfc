package bpf

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The loopback-leg acceleration (sockmap.c) is loaded apart from the other
// objects: it is optional (agentd --sockmap-accel), and a kernel without
// sk_msg programs must still run the rest of the datapath.

// AccelMapNames are the maps only sockmap.c has; it shares enrolled_netns
// (and declares, without using, stats) with the other objects. Its
// counters are its own (accel_stats), so the layout of the shared stats
// map does not depend on it.
var AccelMapNames = []string{MapAccelSocks, MapAccelTCPOnly, MapAccelStats}

// AccelProgNames are sockmap.c's programs by pin name.
var AccelProgNames = []string{ProgAccelSockOps, ProgAccelSkMsg}

var accelProgramNames = map[string]string{
	sockmapProgAccelSockops: ProgAccelSockOps,
	sockmapProgAccelSkMsg:   ProgAccelSkMsg,
}

// AccelCounters are the counters of the accel_stats map, summed over CPUs:
//
//	AccelInserted      accel sockops put a loopback socket into accel_socks
//	AccelInsertErrors  accel sockops could not (accel_socks full, an MPTCP socket)
//	AccelRedirected    accel sk_msg moved a message into the peer socket's receive queue
//	AccelPassed        accel sk_msg sent a message over TCP: the peer is not in accel_socks
type AccelCounters sockmapAccelCounters

// ReadAccelCounters reads the accel_stats map and sums the per-CPU values.
func ReadAccelCounters(m *ebpf.Map) (AccelCounters, error) {
	var perCPU []sockmapAccelCounters
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
		return AccelCounters{}, fmt.Errorf("read %s: %w", MapAccelStats, err)
	}
	var sum AccelCounters
	for _, c := range perCPU {
		sum.AccelInserted += c.AccelInserted
		sum.AccelInsertErrors += c.AccelInsertErrors
		sum.AccelRedirected += c.AccelRedirected
		sum.AccelPassed += c.AccelPassed
	}
	return sum, nil
}

// AccelMapSpecs returns the specs of AccelMapNames by name.
func AccelMapSpecs() (map[string]*ebpf.MapSpec, error) {
	s, err := loadSockmap()
	if err != nil {
		return nil, err
	}
	out := map[string]*ebpf.MapSpec{}
	for _, name := range AccelMapNames {
		out[name] = s.Maps[name]
	}
	return out, nil
}

// LoadAccel loads sockmap.c's programs and maps into o, which Load made:
// enrolled_netns (and stats) are o's. Maps in existing (by name, the pins of
// an earlier run) are used when compatible, as Load does. On error o is
// left as it was.
func (o *Objects) LoadAccel(existing map[string]*ebpf.Map) (err error) {
	s, err := loadSockmap()
	if err != nil {
		return err
	}
	own := map[string]*ebpf.Map{}
	defer func() {
		if err != nil {
			for _, m := range own {
				m.Close()
			}
		}
	}()
	repl := map[string]*ebpf.Map{}
	for _, name := range slices.Sorted(maps.Keys(s.Maps)) {
		if m := o.Maps[name]; m != nil && !slices.Contains(AccelMapNames, name) {
			repl[name] = m
			continue
		}
		m, err := openMap(s.Maps[name], existing[name])
		if err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
		own[name], repl[name] = m, m
	}
	fitReplacements(s, repl)
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return fmt.Errorf("load accel programs: %w", err)
	}
	for elfName, p := range coll.Programs {
		o.Programs[accelProgramNames[elfName]] = p
		delete(coll.Programs, elfName)
	}
	coll.Close() // the cloned maps
	maps.Copy(o.Maps, own)
	return nil
}

// AttachAccelMsg attaches accel_sk_msg to accel_socks (replacing a program
// attached by an earlier run). The attachment lives as long as the map.
func (o *Objects) AttachAccelMsg() error {
	m, p := o.Maps[MapAccelSocks], o.Programs[ProgAccelSkMsg]
	if m == nil || p == nil {
		return errors.New("attach accel sk_msg: accel objects not loaded")
	}
	err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: m.FD(), Program: p, Attach: ebpf.AttachSkMsgVerdict})
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", ProgAccelSkMsg, MapAccelSocks, err)
	}
	return nil
}

// CloseAccel closes sockmap.c's programs and maps and forgets them (pins
// stay).
func (o *Objects) CloseAccel() error {
	var errs []error
	for _, name := range AccelProgNames {
		if p := o.Programs[name]; p != nil {
			errs = append(errs, p.Close())
			delete(o.Programs, name)
		}
	}
	for _, name := range AccelMapNames {
		if m := o.Maps[name]; m != nil {
			errs = append(errs, m.Close())
			delete(o.Maps, name)
		}
	}
	return errors.Join(errs...)
}

// AccelProbe tells ztunnel whether one of its sockets is in agentd's
// pinned accel_socks, so receives redirected bytes that splice(2) would
// not see. It follows the pin: it reopens the map when the pin is replaced
// and answers false while there is none. Safe for concurrent use.
type AccelProbe struct {
	path string

	mu  sync.Mutex
	m   *ebpf.Map // guarded by mu
	ino uint64    // the pin's inode when m was opened
}

// NewAccelProbe watches the accel_socks pin under pinDir.
func NewAccelProbe(pinDir string) *AccelProbe {
	return &AccelProbe{path: MapPin(pinDir, MapAccelSocks)}
}

// Accelerated reports whether c, a socket of ztunnel's, is in accel_socks.
// When it cannot tell it says true: the caller then copies instead of
// splicing, which is always correct.
func (p *AccelProbe) Accelerated(c *net.TCPConn) bool {
	m, err := p.current()
	if err != nil {
		return true
	}
	if m == nil {
		return false
	}
	key, cookie, err := accelKey(c)
	if err != nil {
		return true
	}
	var got uint64
	err = m.Lookup(&key, &got)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false
	}
	return err != nil || got == cookie
}

// current is the map behind the pin now, nil without a pin.
func (p *AccelProbe) current() (*ebpf.Map, error) {
	var st unix.Stat_t
	err := unix.Stat(p.path, &st)
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(err, unix.ENOENT) {
		if p.m != nil {
			p.m.Close()
			p.m = nil
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p.path, err)
	}
	if p.m != nil && p.ino == st.Ino {
		return p.m, nil
	}
	m, err := ebpf.LoadPinnedMap(p.path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.path, err)
	}
	if p.m != nil {
		p.m.Close()
	}
	p.m, p.ino = m, st.Ino
	return m, nil
}

// Close closes the map.
func (p *AccelProbe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		return nil
	}
	err := p.m.Close()
	p.m = nil
	return err
}

// accelKey is the accel_socks key of c as ztunnel's socket, and c's socket
// cookie.
func accelKey(c *net.TCPConn) (sockmapSockKey, uint64, error) {
	var key sockmapSockKey
	rc, err := c.SyscallConn()
	if err != nil {
		return key, 0, err
	}
	var cookie uint64
	var serr error
	err = rc.Control(func(fd uintptr) {
		var ns uint64
		if ns, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); serr != nil {
			return
		}
		key.NetnsCookie = ns
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	})
	if err = errors.Join(err, serr); err != nil {
		return key, 0, err
	}
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return key, 0, errors.New("not a TCP socket")
	}
	la, ra := local.AddrPort(), remote.AddrPort()
	key.LocalAddr, key.RemoteAddr = la.Addr().As16(), ra.Addr().As16()
	key.LocalPort, key.RemotePort = la.Port(), ra.Port()
	key.Ztunnel = 1
	return key, cookie, nil
}
