package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Pods finds the pods scheduled on a node (the informer cache).
type Pods interface {
	PodsOnNode(node string) []*corev1.Pod
}

// ServiceAccounts says whether a ServiceAccount object exists (the
// informer cache).
type ServiceAccounts interface {
	ServiceAccountExists(namespace, name string) bool
}

// Options configure a CA.
type Options struct {
	CertPEM, KeyPEM []byte // the root
	TrustDomain     string
	Lifetime        time.Duration // of workload certificates (default 24h)
	Pods            Pods
	// ServiceAccounts gates signing on the identity's ServiceAccount
	// existing; nil refuses every request.
	ServiceAccounts ServiceAccounts
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}

// CA signs workload certificates.
type CA struct {
	roots    atomic.Pointer[signer] // swapped by SetRoots
	td       string
	lifetime time.Duration
	pods     Pods
	sas      ServiceAccounts
	log      *slog.Logger
	issued   prometheus.Counter
	refused  *prometheus.CounterVec // reason
}

// signer is the root that signs and the bundle of every trusted root.
type signer struct {
	local     *pki.LocalCA
	root      *x509.Certificate
	key       crypto.Signer
	bundlePEM []byte
}

func newSigner(certPEM, keyPEM, bundlePEM []byte, td string) (*signer, error) {
	local, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca key pair: %w", err)
	}
	if err := checkRootDomain(local.Certificate(), td); err != nil {
		return nil, err
	}
	return &signer{local: local, root: local.Certificate(), key: pair.PrivateKey.(crypto.Signer), bundlePEM: bundlePEM}, nil
}

// New loads the root and returns a CA.
func New(o Options) (*CA, error) {
	s, err := newSigner(o.CertPEM, o.KeyPEM, o.CertPEM, o.TrustDomain)
	if err != nil {
		return nil, err
	}
	c := &CA{td: o.TrustDomain, lifetime: o.Lifetime, pods: o.Pods, sas: o.ServiceAccounts, log: o.Logger}
	c.roots.Store(s)
	if c.lifetime <= 0 {
		c.lifetime = pki.DefaultLifetime
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.issued = prometheus.NewCounter(prometheus.CounterOpts{Name: "agentmesh_controller_certificates_issued_total",
		Help: "Workload certificates signed."})
	c.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentmesh_controller_certificates_refused_total",
		Help: "Certificate requests refused, by reason."}, []string{"reason"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(c.issued, c.refused)
	}
	return c, nil
}

// checkRootDomain refuses a root made for another trust domain.
func checkRootDomain(root *x509.Certificate, td string) error {
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" && u.Host != td {
			return fmt.Errorf("ca root is for trust domain %q, controller serves %q", u.Host, td)
		}
	}
	return nil
}

// SetRoots makes r's signing root sign from now on and its bundle the
// one BundlePEM returns; on error the roots in use stay.
func (c *CA) SetRoots(r Roots) error {
	s, err := newSigner(r.CertPEM, r.KeyPEM, r.BundlePEM(), c.td)
	if err != nil {
		return err
	}
	old := c.roots.Swap(s)
	if !old.root.Equal(s.root) {
		c.log.Info("ca signs with a new root", "subject_key_id", fmt.Sprintf("%x", s.root.SubjectKeyId),
			"not_after", s.root.NotAfter)
	}
	return nil
}

// BundlePEM returns every root the mesh trusts, PEM.
func (c *CA) BundlePEM() []byte { return c.roots.Load().bundlePEM }

// Root returns the root that signs.
func (c *CA) Root() *x509.Certificate { return c.roots.Load().root }

// Refusal reasons (label values of the refused counter).
const (
	ReasonBadRequest  = "bad_request"
	ReasonBadCSR      = "bad_csr"
	ReasonTrustDomain = "trust_domain"
	ReasonNoPod       = "no_pod_on_node"
	ReasonNoSA        = "no_service_account"
	ReasonSign        = "sign_failed"
)

// errNoSA is the refusal when the identity's ServiceAccount object does
// not exist (deleted while its pods still run, or never made).
var errNoSA = errors.New("no such service account")

// RefusedError is a refused signing request.
type RefusedError struct {
	Reason string
	Err    error
}

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Sign signs the CSR (PEM) for a caller on node and returns the chain, PEM,
// leaf first. Every refusal is a *RefusedError.
func (c *CA) Sign(ctx context.Context, node string, csrPEM []byte) ([]byte, error) {
	chain, err := c.sign(ctx, node, csrPEM)
	if err != nil {
		var re *RefusedError
		if errors.As(err, &re) {
			c.refused.WithLabelValues(re.Reason).Inc()
		}
		c.log.Warn("refused certificate request", "node", node, "err", err)
		return nil, err
	}
	c.issued.Inc()
	return chain, nil
}

func (c *CA) sign(ctx context.Context, node string, csrPEM []byte) ([]byte, error) {
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, &RefusedError{ReasonBadRequest, errors.New("csr is not a PEM certificate request")}
	}
	id, err := csrID(blk.Bytes)
	if err != nil {
		return nil, &RefusedError{ReasonBadCSR, err}
	}
	if id.TrustDomain != c.td {
		return nil, &RefusedError{ReasonTrustDomain, fmt.Errorf("identity %s is not in trust domain %q", id, c.td)}
	}
	if !c.podOnNode(node, id) {
		return nil, &RefusedError{ReasonNoPod, fmt.Errorf("%w: %s on node %q", errNoPod, id, node)}
	}
	if c.sas == nil || !c.sas.ServiceAccountExists(id.Namespace, id.ServiceAccount) {
		return nil, &RefusedError{ReasonNoSA, fmt.Errorf("%w: %s/%s (identity %s)", errNoSA, id.Namespace, id.ServiceAccount, id)}
	}
	chain, err := c.roots.Load().local.Sign(ctx, blk.Bytes, id, c.lifetime)
	if err != nil {
		reason := ReasonSign
		if errors.Is(err, pki.ErrBadCSR) {
			reason = ReasonBadCSR
		}
		return nil, &RefusedError{reason, err}
	}
	c.log.Info("issued certificate", "id", id.String(), "node", node, "serial", chain[0].SerialNumber.Text(16))
	var out []byte
	for _, x := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})...)
	}
	return out, nil
}

// csrID returns the SPIFFE id a CSR asks for; pki.CheckCSR (run by the
// signer) then checks it is the only SAN and the key is ECDSA P-256.
func csrID(der []byte) (spiffe.ID, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("%w: parse: %w", pki.ErrBadCSR, err)
	}
	var uris []*url.URL
	for _, u := range csr.URIs {
		if u.Scheme == "spiffe" {
			uris = append(uris, u)
		}
	}
	if len(uris) != 1 {
		return spiffe.ID{}, fmt.Errorf("%w: has %d spiffe uri sans, want 1", pki.ErrBadCSR, len(uris))
	}
	id, err := spiffe.Parse(uris[0].String())
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("%w: %w", pki.ErrBadCSR, err)
	}
	return id, nil
}

// podOnNode reports whether a running pod on node has identity id.
func (c *CA) podOnNode(node string, id spiffe.ID) bool {
	if c.pods == nil || node == "" {
		return false
	}
	for _, p := range c.pods.PodsOnNode(node) {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		done := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if !done && p.Namespace == id.Namespace && sa == id.ServiceAccount {
			return true
		}
	}
	return false
}
