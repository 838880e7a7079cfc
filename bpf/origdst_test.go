package bpf

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTupleKeyMapsIPv4(t *testing.T) {
	ap := netip.MustParseAddrPort
	k4 := tupleKey(7, ap("127.0.0.1:40000"), ap("127.0.0.1:15001"))
	k6 := tupleKey(7, ap("[::ffff:127.0.0.1]:40000"), ap("[::ffff:127.0.0.1]:15001"))
	if k4 != k6 {
		t.Errorf("v4 key %+v != v4-mapped key %+v", k4, k6)
	}
	if k4.Family != unix.AF_INET || k4.SrcPort != 40000 || k4.DstPort != 15001 || k4.SrcAddr[10] != 0xff {
		t.Errorf("v4 key = %+v", k4)
	}
	if k := tupleKey(7, ap("[::1]:40000"), ap("[::1]:15001")); k.Family != unix.AF_INET6 || k.DstAddr[15] != 1 {
		t.Errorf("v6 key = %+v", k)
	}
}
