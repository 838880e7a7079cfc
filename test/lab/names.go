package lab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
)

// Names and paths of everything a lab makes. Every name starts with the lab
// id, so Down can find the leftovers of any lab.
const (
	// Prefix starts every lab id.
	Prefix = "amlab-"
	// StateRoot holds one state directory per lab (config, CA, logs, pids).
	StateRoot = "/run/amlab"
	// BPFRoot is the bpffs mount; each lab pins under BPFRoot/<id>/.
	BPFRoot = "/sys/fs/bpf"
	// netnsDir is where named network namespaces are bind-mounted (as `ip netns` does).
	netnsDir = "/run/netns"
	// bridgeName is the bridge in the wire netns joining the nodes.
	bridgeName = "br0"
	// podIfName is the interface name inside pods and nodes.
	podIfName = "eth0"
)

// newID returns a fresh lab id: amlab-<6 hex>.
func newID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random lab id: %w", err)
	}
	return Prefix + hex.EncodeToString(b), nil
}

// nodeName is the mesh name of node i ("n1").
func nodeName(i int) string { return fmt.Sprintf("n%d", i) }

// netnsPath is the path of the named netns.
func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// nodeIPv4 is node i's address on the wire: 198.18.0.<i>.
func nodeIPv4(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }

// nodeIPv6 is node i's address on the wire: fd00:18::<i>.
func nodeIPv6(i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:18::%x", i))
}

// podIPv4 is pod k's address on node i: 198.19.<i>.<k>; k=1 is the node
// side. Pods past the /24 (k > 254, only AddPods makes that many) get
// 10.<i>.<k/256>.<k%256>, which the other nodes have no route to: a node
// full of pods measures scale, not cross-node traffic.
func podIPv4(i, k int) netip.Addr {
	if k > 254 {
		return netip.AddrFrom4([4]byte{10, byte(i), byte(k >> 8), byte(k)})
	}
	return netip.AddrFrom4([4]byte{198, 19, byte(i), byte(k)})
}

// maxPodIndex bounds a node's pods (the datapath's bpf.MaxPods is larger).
const maxPodIndex = 10000

// podIPv6 is pod k's address on node i: fd00:19:<i>::<k>.
func podIPv6(i, k int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:19:%x::%x", i, k))
}

// podPrefixV4 is node i's pod range 198.19.<i>.0/24.
func podPrefixV4(i int) netip.Prefix { return netip.PrefixFrom(podIPv4(i, 0), 24) }

// podPrefixV6 is node i's pod range fd00:19:<i>::/64.
func podPrefixV6(i int) netip.Prefix { return netip.PrefixFrom(podIPv6(i, 0), 64) }
