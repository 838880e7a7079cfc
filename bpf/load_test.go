package bpf

import "testing"

func TestLoad(t *testing.T) {
	requireRoot(t)
	o, err := Load(nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer o.Close()
	for _, n := range []string{ProgConnect4, ProgConnect6, ProgSockOps, ProgSkLookup,
		ProgDNSConnect4, ProgDNSConnect6, ProgDNSSendmsg4, ProgDNSSendmsg6, ProgDNSRecvmsg4, ProgDNSRecvmsg6,
		ProgDNSGetpeername4, ProgDNSGetpeername6} {
		if o.Programs[n] == nil {
			t.Errorf("program %s not loaded", n)
		}
	}
	for _, n := range []string{MapEnrolledNetns, MapOrigDstCookie, MapOrigDst, MapListeners, MapStats, MapDNSUpstream, MapDNSSock, MapDeliveries} {
		if o.Maps[n] == nil {
			t.Errorf("map %s not loaded", n)
		}
	}
}
