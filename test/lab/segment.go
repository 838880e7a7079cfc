package lab

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// Segment is one TCP segment seen on the wire.
type Segment struct {
	Src, Dst netip.AddrPort
	// Flags are the TCP flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
	Flags   uint8
	Payload []byte
}

// Ethernet and IP constants the parser needs.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	protoTCP      = 6
)

// parseFrame decodes an Ethernet frame carrying IPv4 or IPv6 and TCP
// (IPv6 extension headers and IPv4 fragments are not followed). It never
// panics on short or malformed input.
func parseFrame(b []byte) (Segment, bool) {
	if len(b) < 14 {
		return Segment{}, false
	}
	switch binary.BigEndian.Uint16(b[12:14]) {
	case etherTypeIPv4:
		return parseIPv4(b[14:])
	case etherTypeIPv6:
		return parseIPv6(b[14:])
	}
	return Segment{}, false
}

// parseIPv4 decodes an IPv4 packet carrying TCP.
func parseIPv4(b []byte) (Segment, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != protoTCP {
		return Segment{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 { // not the first fragment
		return Segment{}, false
	}
	if ihl < 20 || total < ihl || total > len(b) {
		if total != 0 || ihl < 20 { // total 0 happens with TSO; use the frame length
			return Segment{}, false
		}
		total = len(b)
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	return parseTCP(src, dst, b[ihl:total])
}

// parseIPv6 decodes an IPv6 packet whose next header is TCP.
func parseIPv6(b []byte) (Segment, bool) {
	if len(b) < 40 || b[0]>>4 != 6 || b[6] != protoTCP {
		return Segment{}, false
	}
	end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) || end == 40 {
		end = len(b)
	}
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	return parseTCP(src, dst, b[40:end])
}

// parseTCP decodes the TCP header and payload.
func parseTCP(src, dst netip.Addr, b []byte) (Segment, bool) {
	if len(b) < 20 {
		return Segment{}, false
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > len(b) {
		return Segment{}, false
	}
	return Segment{
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[0:2])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[2:4])),
		Flags:   b[13],
		Payload: bytes.Clone(b[off:]),
	}, true
}

// Flow is one direction of a TCP connection.
type Flow struct{ Src, Dst netip.AddrPort }

// FlowsContaining returns the flows whose payload, concatenated in capture
// order, contains marker (so a marker split across segments is found).
// An empty result means the marker never crossed the wire in clear.
func FlowsContaining(segs []Segment, marker []byte) []Flow {
	streams := map[Flow][]byte{}
	var order []Flow
	for _, s := range segs {
		f := Flow{s.Src, s.Dst}
		if _, ok := streams[f]; !ok {
			order = append(order, f)
		}
		streams[f] = append(streams[f], s.Payload...)
	}
	var out []Flow
	for _, f := range order {
		if bytes.Contains(streams[f], marker) {
			out = append(out, f)
		}
	}
	return out
}

// DstPorts counts the segments per destination port.
func DstPorts(segs []Segment) map[uint16]int {
	out := map[uint16]int{}
	for _, s := range segs {
		out[s.Dst.Port()]++
	}
	return out
}
