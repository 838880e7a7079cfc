// Package spiffe is the SPIFFE id of a workload:
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ID is a workload identity. The zero ID is invalid.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New returns the id of a service account.
func New(trustDomain, namespace, serviceAccount string) ID {
	return ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
}

// String formats the id as a spiffe:// URI.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the id as a URL, for a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// Parse reads a spiffe://td/ns/NS/sa/SA URI.
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q: scheme must be spiffe", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[0] == "" || parts[1] != "ns" || parts[2] == "" || parts[3] != "sa" || parts[4] == "" {
		return ID{}, fmt.Errorf("spiffe id %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	return ID{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// ErrNoID means a certificate carries no SPIFFE URI SAN.
var ErrNoID = errors.New("certificate has no spiffe id")

// FromCertificate returns the single SPIFFE id in cert's URI SANs.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	var ids []ID
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := Parse(u.String())
		if err != nil {
			return ID{}, err
		}
		ids = append(ids, id)
	}
	switch len(ids) {
	case 0:
		return ID{}, ErrNoID
	case 1:
		return ids[0], nil
	default:
		return ID{}, fmt.Errorf("certificate has %d spiffe ids, want one", len(ids))
	}
}
