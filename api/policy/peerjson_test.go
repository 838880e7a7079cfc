package policy

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTargetJSON round-trips a target through JSON (the config stream's
// encoding) and checks the wire form of a peer.
func TestTargetJSON(t *testing.T) {
	in := target(
		pol("a", allow,
			from(Peer{Identities: SetOf(webID, adminID)}, Peer{Namespaces: SetOf[string]()}).on(port(80)),
			from(Peer{Workloads: SetOf("uid-a"), IPBlocks: []IPBlock{block("10.0.0.0/8", "10.1.0.0/16")}}).l7()),
		pol("d", deny, Rule{}.on(PortRange{From: 22, To: 23}))).permissive()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Target
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, &out, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("round trip (-in +out):\n%s\nwire: %s", diff, b)
	}
	peer, _ := json.Marshal(in.Policies[0].Rules[0].From[0])
	want := `{"identities":["spiffe://cluster.local/ns/ops/sa/admin","spiffe://cluster.local/ns/shop/sa/web"]}`
	if string(peer) != want {
		t.Errorf("peer wire form = %s, want %s", peer, want)
	}
	if none, _ := json.Marshal(in.Policies[0].Rules[0].From[1]); string(none) != `{"namespaces":[]}` {
		t.Errorf("empty constrained set = %s, want an empty list", none)
	}
	var bad Peer
	if err := json.Unmarshal([]byte(`{"identities":["nope"]}`), &bad); err == nil {
		t.Error("bad identity accepted")
	}
}
