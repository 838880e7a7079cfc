// Package ca is the controller's certificate authority: an ECDSA P-256
// root kept in a Secret (made on first start), published in a ConfigMap
// for node components, signing workload certificates only for identities of
// pods on the asking node, and the controller's own serving certificate.
package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agentmesh/agentmesh/internal/pki"
)

// Keys and names of the objects the CA keeps.
const (
	SecretCertKey = "ca.crt"            // root certificate, PEM
	SecretKeyKey  = "ca.key"            // root key, PKCS#8 PEM
	RootConfigMap = "agentmesh-ca-root" // published root, in the controller namespace
	RootCertKey   = "root-cert.pem"     // key of the root in RootConfigMap
	// RootLifetime of a new root.
	RootLifetime = 10 * 365 * 24 * time.Hour
)

// EnsureRoot returns the roots in the Secret ns/name (see Roots),
// creating it with a new root for trustDomain if it does not exist. Two
// replicas starting together are safe: the loser of the create reads the
// winner's Secret.
func EnsureRoot(ctx context.Context, c kubernetes.Interface, ns, name, trustDomain string, log *slog.Logger) (Roots, error) {
	secrets := c.CoreV1().Secrets(ns)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s, err = createRoot(ctx, c, ns, name, trustDomain)
		if err == nil {
			log.Info("created ca root", "secret", ns+"/"+name, "trustDomain", trustDomain)
		} else if apierrors.IsAlreadyExists(err) {
			s, err = secrets.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return Roots{}, fmt.Errorf("ca secret %s/%s: %w", ns, name, err)
	}
	return RootsFromSecret(s)
}

func createRoot(ctx context.Context, c kubernetes.Interface, ns, name, trustDomain string) (*corev1.Secret, error) {
	certPEM, keyPEM, err := pki.GenerateCA(trustDomain, RootLifetime)
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/part-of": "agentmesh"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{SecretCertKey: certPEM, SecretKeyKey: keyPEM},
	}
	return c.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
}

// PublishRoot writes the trust bundle (every root the mesh trusts, PEM)
// to the ConfigMap RootConfigMap in ns, creating or updating it.
func PublishRoot(ctx context.Context, c kubernetes.Interface, ns string, certPEM []byte) error {
	cms := c.CoreV1().ConfigMaps(ns)
	want := map[string]string{RootCertKey: string(certPEM)}
	cm, err := cms.Get(ctx, RootConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RootConfigMap, Namespace: ns}, Data: want}
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return PublishRoot(ctx, c, ns, certPEM)
		}
	case err == nil && cm.Data[RootCertKey] != string(certPEM):
		cm.Data = want
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("publish ca root to configmap %s/%s: %w", ns, RootConfigMap, err)
	}
	return nil
}

// errNoPod is the refusal when no pod on the caller's node runs as the id.
var errNoPod = errors.New("no pod with this identity on the caller's node")
