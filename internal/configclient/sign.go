package configclient

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Sign asks the controller's CA to sign a CSR (PEM) and returns the chain
// as DER certificates, leaf first.
func (c *Client) Sign(ctx context.Context, csrPEM []byte) ([][]byte, error) {
	conn, err := c.connection()
	if err != nil {
		return nil, err
	}
	resp, err := configapi.NewClient(conn).SignCertificate(ctx, &configapi.SignRequest{CSRPEM: csrPEM})
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	var chain [][]byte
	for rest := resp.ChainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("sign certificate: response has no certificate")
	}
	return chain, nil
}

// RemoteSigner is an identity.Signer (ztunnel/identity) backed by the
// controller's CA. The controller decides the lifetime (--cert-lifetime);
// the lifetime asked for is ignored.
type RemoteSigner struct{ Client *Client }

// Sign implements identity.Signer.
func (r RemoteSigner) Sign(ctx context.Context, csrDER []byte, id spiffe.ID, _ time.Duration) ([]*x509.Certificate, error) {
	ders, err := r.Client.Sign(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return nil, err
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parse issued certificate: %w", err)
		}
		out = append(out, c)
	}
	if got, err := spiffe.FromCertificate(out[0]); err != nil || got != id {
		return nil, fmt.Errorf("controller issued a certificate for %v, want %s", got, id)
	}
	return out, nil
}
