package authorize

import (
	"errors"
	"fmt"
	"testing"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// TestConnRevoke: a revocation runs the closers attached so far, and any
// attached later at once (a connection revoked while its upstream is
// dialed is closed, never proxied); a connection that ended is not revoked
// (nothing to close, nothing to report).
func TestConnRevoke(t *testing.T) {
	c := &Conn{Pod: &flow.Pod{}, Live: &Live{}}
	var closed []string
	if !c.Attach(func() { closed = append(closed, "dial") }) {
		t.Fatal("attach before revoke refused")
	}
	d := policy.Decision{Reason: policy.ReasonDenyRule, Policy: "agents/p", Rule: 2}
	if !c.revoke(d) || c.revoke(d) {
		t.Fatal("revoke must succeed once")
	}
	if c.Attach(func() { closed = append(closed, "up") }) {
		t.Fatal("attach after revoke accepted")
	}
	if fmt.Sprint(closed) != "[dial up]" {
		t.Errorf("closers ran %v, want [dial up]", closed)
	}
	err := c.RevokedErr()
	if err == nil || err.Error() != "closed by policy change: deny deny-rule agents/p rule 2" || !errors.Is(err, hbone.ErrDenied) {
		t.Errorf("RevokedErr = %v", err)
	}

	ended := &Conn{Pod: &flow.Pod{}, Live: &Live{}}
	ended.Attach(func() { t.Error("closer of an ended connection ran") })
	ended.End()
	if ended.revoke(d) || ended.RevokedErr() != nil {
		t.Error("ended connection revoked")
	}
}
