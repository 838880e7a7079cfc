package bpf

import (
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
)

// Counters are the datapath counters of the stats map, summed over CPUs:
//
//	ConnectRedirected  connect4/6 rewrote a connection to ztunnel's 15001
//	ConnectBypassed    connect4/6 let a socket with mesh.SocketMark through
//	ConnectErrors      connect4/6 could not save the destination: EPERM
//	SockopsRecorded    sockops moved a destination to orig_dst
//	SockopsErrors      sockops could not write orig_dst
//	LookupSteered      sk_lookup gave a connection to a ztunnel listener
//	LookupDropped      sk_lookup refused a connection: no listener
//	LookupErrors       sk_lookup refused a connection: bpf_sk_assign failed
//	DnsRedirected      dns connect/sendmsg sent a UDP port 53 query to ztunnel's 15053
//	DnsBypassed        dns connect/sendmsg let a socket with mesh.SocketMark through
//	DnsErrors          dns connect/sendmsg left a query uncaptured: no port, map full
//	DnsRestored        dns recvmsg/getpeername showed the upstream instead of 15053
type Counters captureCounters

// ReadCounters reads the stats map and sums the per-CPU values.
func ReadCounters(m *ebpf.Map) (Counters, error) {
	var perCPU []captureCounters
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
		return Counters{}, fmt.Errorf("read stats: %w", err)
	}
	var sum Counters
	total := reflect.ValueOf(&sum).Elem()
	for _, c := range perCPU {
		v := reflect.ValueOf(c)
		for i := range v.NumField() {
			if f := total.Field(i); f.Kind() == reflect.Uint64 {
				f.SetUint(f.Uint() + v.Field(i).Uint())
			}
		}
	}
	return sum, nil
}
