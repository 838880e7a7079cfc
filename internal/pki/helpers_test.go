package pki

import (
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

var (
	idA = spiffe.New("cluster.local", "ns1", "a")
	idB = spiffe.New("cluster.local", "ns2", "b")
)

func newCA(t *testing.T, td string) *LocalCA {
	t.Helper()
	certPEM, keyPEM, err := GenerateCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
