package bpf

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The loopback-leg acceleration (sockmap.c) is loaded apart from the other
// objects: it is optional (agentd --sockmap-accel), and a kernel without
// sk_msg programs must still run the rest of the datapath.

// AccelMapNames are the maps only sockmap.c has; it shares stats and
// enrolled_netns with the other objects.
var AccelMapNames = []string{MapAccelSocks, MapAccelTCPOnly}

// AccelProgNames are sockmap.c's programs by pin name.
var AccelProgNames = []string{ProgAccelSockOps, ProgAccelSkMsg}

var accelProgramNames = map[string]string{
	sockmapProgAccelSockops: ProgAccelSockOps,
	sockmapProgAccelSkMsg:   ProgAccelSkMsg,
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
// stats and enrolled_netns are o's. Maps in existing (by name, the pins of
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
