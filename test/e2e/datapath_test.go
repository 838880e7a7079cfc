package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestDataPath: pod A on node 1 reaches pod B on node 2 and pod C on node 1
// through the mesh, over IPv4 and IPv6; on the wire between the nodes only
// TLS to port 15008 is seen; pods outside the mesh are not captured.
func TestDataPath(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	c := addPod(t, l, "c", 1, true)
	d := addPod(t, l, "d", 2, false)
	e := addPod(t, l, "e", 1, false)

	for _, fam := range []struct {
		name string
		ip   func(*lab.Pod) netip.Addr
	}{{"ipv4", (*lab.Pod).IPv4}, {"ipv6", (*lab.Pod).IPv6}} {
		t.Run(fam.name, func(t *testing.T) {
			t.Run("cross-node over mTLS only", func(t *testing.T) {
				capt, err := l.Capture(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				secret := "agent-payload-secret-" + fam.name
				send(t, l, a, addr(fam.ip(b), echoPort), secret)
				segs, err := capt.Stop()
				if err != nil {
					t.Fatal(err)
				}
				if f := lab.FlowsContaining(segs, []byte(secret)); len(f) > 0 {
					t.Errorf("the payload crossed the wire in clear: %v", f)
				}
				for _, s := range segs {
					if s.Src.Addr() == fam.ip(a) && s.Dst.Port() != 15008 {
						t.Errorf("pod a sent to %s on the wire; want only HBONE (port 15008)", s.Dst)
					}
				}
				if lab.DstPorts(segs)[15008] == 0 {
					t.Errorf("no HBONE traffic on the wire; ports seen: %v", lab.DstPorts(segs))
				}
				out := waitAccess(t, l, 1, "outbound a->b", func(x lab.AccessLog) bool {
					return x.Direction == "outbound" && x.Dst().Addr().Unmap() == fam.ip(b) && x.Dst().Port() == echoPort
				})
				if !out.MTLS || out.DstIdentity != spiffeOf("b") || out.SrcIdentity != spiffeOf("a") || out.Result != "ok" {
					t.Errorf("node 1 outbound access log: %+v; want mTLS from %s to %s", out, spiffeOf("a"), spiffeOf("b"))
				}
				in := waitAccess(t, l, 2, "inbound a->b", func(x lab.AccessLog) bool {
					return x.Direction == "inbound" && x.Src().Addr().Unmap() == fam.ip(a)
				})
				if !in.MTLS || in.SrcIdentity != spiffeOf("a") || in.Protocol != "hbone" {
					t.Errorf("node 2 inbound access log: %+v; want hbone mTLS with peer %s", in, spiffeOf("a"))
				}
			})
			t.Run("same-node through the mesh", func(t *testing.T) {
				send(t, l, a, addr(fam.ip(c), echoPort), "same-node-"+fam.name)
				// Both pods on node 1: joined inside its ztunnel (the
				// same-node fast path), the source identity known to it.
				in := waitAccess(t, l, 1, "inbound a->c", func(x lab.AccessLog) bool {
					return x.Direction == "inbound" && x.Src().Addr().Unmap() == fam.ip(a) && x.Dst().Addr().Unmap() == fam.ip(c)
				})
				if in.Protocol != "local" || in.SrcIdentity != spiffeOf("a") || in.DstIdentity != spiffeOf("c") || in.Result != "ok" {
					t.Errorf("node 1 inbound access log: %+v; want protocol local from %s", in, spiffeOf("a"))
				}
				out := waitAccess(t, l, 1, "outbound a->c", func(x lab.AccessLog) bool {
					return x.Direction == "outbound" && x.Dst().Addr().Unmap() == fam.ip(c)
				})
				if out.Protocol != "local" || out.DstIdentity != spiffeOf("c") || out.Result != "ok" {
					t.Errorf("node 1 outbound access log: %+v; want protocol local to %s", out, spiffeOf("c"))
				}
			})
			t.Run("not enrolled is not captured", func(t *testing.T) {
				capt, err := l.Capture(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				marker := fmt.Sprintf("outside-the-mesh-%s", fam.name)
				send(t, l, e, addr(fam.ip(d), echoPort), marker)
				segs, err := capt.Stop()
				if err != nil {
					t.Fatal(err)
				}
				if len(lab.FlowsContaining(segs, []byte(marker))) == 0 {
					t.Errorf("e -> d (both outside the mesh) should go direct and in clear, but the capture did not see it")
				}
				for node := 1; node <= 2; node++ {
					logs, err := l.AccessLogs(node)
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range logs {
						if x.Src().Addr().Unmap() == fam.ip(e) {
							t.Errorf("node %d ztunnel proxied a connection of a pod outside the mesh: %+v", node, x)
						}
					}
				}
			})
		})
	}
}
