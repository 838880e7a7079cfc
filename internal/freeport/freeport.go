// Package freeport finds TCP ports to hand to a process that binds them
// itself (a test or the lab starting a server with --listen ADDR:PORT).
//
// A port from binding port 0 comes from the kernel's ephemeral range,
// where any outgoing connection of any process may take it in the moment
// between closing it and the server binding it: with a Kubernetes control
// plane on the same machine making connections all the time, that race is
// real (a test then talked to the wrong server). Below the ephemeral range
// the kernel never hands a port out by itself: only an explicit bind can
// take it.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// low is the first port Find picks from.
const low = 10000

// Find returns n distinct TCP ports that were free on addr at once, from
// below the ephemeral range (above it only when that range starts too low
// to leave room).
func Find(addr netip.Addr, n int) ([]uint16, error) {
	high := ephemeralStart()
	if high-low < 100*n {
		return fromKernel(addr, n)
	}
	var lastErr error
	for range 50 {
		ports, err := tryPorts(addr, n, func() int { return low + rand.IntN(high-low) })
		if err == nil {
			return ports, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("find %d free ports below %d: %w", n, high, lastErr)
}

// Addrs is Find as host:port strings on addr.
func Addrs(addr netip.Addr, n int) ([]string, error) {
	ports, err := Find(addr, n)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = netip.AddrPortFrom(addr, p).String()
	}
	return out, nil
}

// tryPorts binds n ports chosen by pick, all at once, and releases them.
func tryPorts(addr netip.Addr, n int, pick func() int) ([]uint16, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []uint16
	for len(ports) < n {
		l, err := net.Listen("tcp", netip.AddrPortFrom(addr, uint16(pick())).String())
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, uint16(l.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}

// fromKernel lets the kernel pick (ephemeral ports).
func fromKernel(addr netip.Addr, n int) ([]uint16, error) {
	ports, err := tryPorts(addr, n, func() int { return 0 })
	if err != nil {
		return nil, fmt.Errorf("find free port: %w", err)
	}
	return ports, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (32768 when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	p, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return p
}
