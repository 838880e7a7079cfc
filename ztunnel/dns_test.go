package ztunnel

import (
	"os"
	"testing"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// TestRealNetMakesDNSSockets: the real pod Net is a dnsproxy.Net, so
// every enrolled pod gets its DNS proxy (startDNSLocked skips a Net that
// is not).
func TestRealNetMakesDNSSockets(t *testing.T) {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	n, err := podnet.Netns{}.Open(handoff.Pod{}, f)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, ok := n.(dnsproxy.Net); !ok {
		t.Fatalf("%T is not a dnsproxy.Net", n)
	}
}
