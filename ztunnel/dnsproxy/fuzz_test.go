package dnsproxy

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzDNSDecide feeds any bytes to the proxy's handling of a datagram: it
// must not panic, a reply must be a well-formed DNS response to the same
// id, and a query it forwards must be one (the header parsed, not a
// response).
func FuzzDNSDecide(f *testing.F) {
	f.Add(query("data-validator.", dns.TypeA))
	f.Add(query("data-validator.agents.svc.cluster.local.", dns.TypeAAAA))
	f.Add(query("example.com.", dns.TypeMX))
	f.Add([]byte{0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0x80})
	f.Add([]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}) // pointer loop
	idx := testIndex()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		v := decide(pkt, idx, "agents", "cluster.local")
		replyMatches(pkt, pkt)
		servFail(pkt)
		switch v.outcome {
		case "":
			if len(pkt) < headerLen || pkt[2]&0x80 != 0 {
				t.Fatalf("forwarding %x: not a query", pkt)
			}
		case Answered, NXDomain, FormErr:
			if !replyMatches(pkt, v.reply) {
				t.Fatalf("reply %x does not answer %x", v.reply, pkt)
			}
		case Dropped:
			if v.reply != nil {
				t.Fatal("a dropped datagram has a reply")
			}
		default:
			t.Fatalf("outcome %q", v.outcome)
		}
	})
}
