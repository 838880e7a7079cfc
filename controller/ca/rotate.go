package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/agentmesh/agentmesh/internal/pki"
)

// Root rotation. The CA Secret holds the root that signs (SecretCertKey,
// SecretKeyKey) and, during a rotation, one more root the mesh trusts:
//
//  1. trusting: a new root (SecretNextCertKey, SecretNextKeyKey) joins the
//     trust bundle while the old one still signs, for Timing.Propagation,
//     so that every tunnel trusts it before any certificate comes from it;
//  2. retiring: the new root signs and the old one (SecretPreviousCertKey,
//     without its key) stays in the bundle for the longest lifetime of a
//     certificate it signed plus Timing.Propagation: workloads move to the
//     new root at their next renewal;
//  3. the old root leaves the bundle.
//
// A rotation starts when the Secret gets the annotation AnnotationRotate
// (any value, removed when the rotation starts) or when the signing root
// expires within Timing.RotateBefore. The leader moves from step to step;
// every replica signs with and publishes what the Secret says.
const (
	SecretNextCertKey     = "next.crt"
	SecretNextKeyKey      = "next.key"
	SecretPreviousCertKey = "previous.crt"

	AnnotationRotate     = "agentmesh.io/rotate-root"
	AnnotationPhase      = "agentmesh.io/root-rotation"       // PhaseTrusting or PhaseRetiring; absent: none
	AnnotationPhaseSince = "agentmesh.io/root-rotation-since" // RFC 3339, when the phase began
)

// Phases of a rotation.
const (
	PhaseNone      = ""
	PhaseTrusting  = "trusting"
	PhaseRetiring  = "retiring"
	phaseTimestamp = time.RFC3339Nano
)

// Roots is what the CA Secret says.
type Roots struct {
	CertPEM, KeyPEM []byte // the root that signs
	// NextCertPEM, NextKeyPEM: trusting, the root that signs next.
	NextCertPEM, NextKeyPEM []byte
	// PreviousCertPEM: retiring, the root that signed before.
	PreviousCertPEM []byte
	Phase           string
	Since           time.Time // when Phase began
	// Requested is the value of AnnotationRotate ("" none).
	Requested string
}

// RootsFromSecret reads the roots of the CA Secret s.
func RootsFromSecret(s *corev1.Secret) (Roots, error) {
	r := Roots{
		CertPEM: s.Data[SecretCertKey], KeyPEM: s.Data[SecretKeyKey],
		NextCertPEM: s.Data[SecretNextCertKey], NextKeyPEM: s.Data[SecretNextKeyKey],
		PreviousCertPEM: s.Data[SecretPreviousCertKey],
		Phase:           s.Annotations[AnnotationPhase], Requested: s.Annotations[AnnotationRotate],
	}
	name := s.Namespace + "/" + s.Name
	if len(r.CertPEM) == 0 || len(r.KeyPEM) == 0 {
		return Roots{}, fmt.Errorf("ca secret %s: missing %s or %s", name, SecretCertKey, SecretKeyKey)
	}
	switch r.Phase {
	case PhaseNone:
	case PhaseTrusting, PhaseRetiring:
		t, err := time.Parse(phaseTimestamp, s.Annotations[AnnotationPhaseSince])
		if err != nil {
			return Roots{}, fmt.Errorf("ca secret %s: annotation %s: %w", name, AnnotationPhaseSince, err)
		}
		r.Since = t
	default:
		return Roots{}, fmt.Errorf("ca secret %s: annotation %s=%q: want %q or %q", name, AnnotationPhase, r.Phase, PhaseTrusting, PhaseRetiring)
	}
	if r.Phase == PhaseTrusting && (len(r.NextCertPEM) == 0 || len(r.NextKeyPEM) == 0) {
		return Roots{}, fmt.Errorf("ca secret %s: phase %s without %s and %s", name, r.Phase, SecretNextCertKey, SecretNextKeyKey)
	}
	if r.Phase == PhaseRetiring && len(r.PreviousCertPEM) == 0 {
		return Roots{}, fmt.Errorf("ca secret %s: phase %s without %s", name, r.Phase, SecretPreviousCertKey)
	}
	for k, p := range map[string][]byte{SecretNextCertKey: r.NextCertPEM, SecretPreviousCertKey: r.PreviousCertPEM} {
		if len(p) == 0 {
			continue
		}
		if _, err := rootNotAfter(p); err != nil {
			return Roots{}, fmt.Errorf("ca secret %s: %s: %w", name, k, err)
		}
	}
	return r, nil
}

// apply writes r into s (a copy the caller updates).
func (r Roots) apply(s *corev1.Secret) {
	set := func(k string, v []byte) {
		if len(v) == 0 {
			delete(s.Data, k)
		} else {
			s.Data[k] = v
		}
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	set(SecretCertKey, r.CertPEM)
	set(SecretKeyKey, r.KeyPEM)
	set(SecretNextCertKey, r.NextCertPEM)
	set(SecretNextKeyKey, r.NextKeyPEM)
	set(SecretPreviousCertKey, r.PreviousCertPEM)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	delete(s.Annotations, AnnotationRotate)
	if r.Requested != "" {
		s.Annotations[AnnotationRotate] = r.Requested
	}
	delete(s.Annotations, AnnotationPhase)
	delete(s.Annotations, AnnotationPhaseSince)
	if r.Phase != PhaseNone {
		s.Annotations[AnnotationPhase] = r.Phase
		s.Annotations[AnnotationPhaseSince] = r.Since.UTC().Format(phaseTimestamp)
	}
}

// BundlePEM is every root the mesh trusts: the signing root first, then
// the next or the previous one.
func (r Roots) BundlePEM() []byte {
	var b bytes.Buffer
	for _, p := range [][]byte{r.CertPEM, r.NextCertPEM, r.PreviousCertPEM} {
		if len(p) == 0 {
			continue
		}
		b.Write(p)
		if p[len(p)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Timing of a rotation.
type Timing struct {
	// Propagation: how long a new root is trusted before it signs, and
	// how long the old one stays trusted after its last certificate
	// expired (the config streams push a bundle at once; the root
	// ConfigMap reaches a node's files within a minute or so).
	Propagation time.Duration
	// LeafLifetime: the longest lifetime of a certificate the root signs
	// (workload and the controller's serving certificates).
	LeafLifetime time.Duration
	// RotateBefore starts a rotation when the signing root expires
	// within it (0: never on its own).
	RotateBefore time.Duration
	// TrustDomain of new roots.
	TrustDomain string
}

// Step is the next state of a rotation at now: the new roots, whether
// they changed (and the Secret must be written), and when to look again
// (zero: on the next change of the Secret only).
func Step(r Roots, now time.Time, t Timing) (Roots, bool, time.Time, error) {
	switch r.Phase {
	case PhaseTrusting:
		at := r.Since.Add(t.Propagation)
		if now.Before(at) {
			return r, false, at, nil
		}
		r.PreviousCertPEM, r.CertPEM, r.KeyPEM = r.CertPEM, r.NextCertPEM, r.NextKeyPEM
		r.NextCertPEM, r.NextKeyPEM = nil, nil
		r.Phase, r.Since = PhaseRetiring, now
		return r, true, now.Add(t.LeafLifetime + t.Propagation), nil
	case PhaseRetiring:
		at := r.Since.Add(t.LeafLifetime + t.Propagation)
		if now.Before(at) {
			return r, false, at, nil
		}
		r.PreviousCertPEM, r.Phase, r.Since = nil, PhaseNone, time.Time{}
		return r, true, time.Time{}, nil
	}
	expires, err := rootNotAfter(r.CertPEM)
	if err != nil {
		return r, false, time.Time{}, err
	}
	due := t.RotateBefore > 0 && !now.Before(expires.Add(-t.RotateBefore))
	if r.Requested == "" && !due {
		var wake time.Time
		if t.RotateBefore > 0 {
			wake = expires.Add(-t.RotateBefore)
		}
		return r, false, wake, nil
	}
	certPEM, keyPEM, err := pki.GenerateCA(t.TrustDomain, RootLifetime)
	if err != nil {
		return r, false, time.Time{}, err
	}
	r.NextCertPEM, r.NextKeyPEM, r.Requested = certPEM, keyPEM, ""
	r.Phase, r.Since = PhaseTrusting, now
	return r, true, now.Add(t.Propagation), nil
}

func rootNotAfter(certPEM []byte) (time.Time, error) {
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return time.Time{}, errors.New("ca root: no PEM certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("ca root: %w", err)
	}
	return c.NotAfter, nil
}

// Rotation watches the CA Secret: every replica hands each new version's
// roots to OnRoots; the leader (Leads) also moves a rotation on (Step)
// and writes the Secret.
type Rotation struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Timing    Timing
	Leads     func() bool
	OnRoots   func(Roots)
	Logger    *slog.Logger
	// Kick, when sent on, makes Run look again (this replica became
	// leader).
	Kick <-chan struct{}
	now  func() time.Time
}

// Run watches until ctx is done.
func (w *Rotation) Run(ctx context.Context) error {
	if w.now == nil {
		w.now = time.Now
	}
	f := informers.NewSharedInformerFactoryWithOptions(w.Client, 0, informers.WithNamespace(w.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.Name).String()
		}))
	inf := f.Core().V1().Secrets()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("watch ca secret: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return nil
	}
	var last []byte // the bundle and signing root last handed on
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake := w.look(ctx, inf.Lister().Secrets(w.Namespace).Get, &last)
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(w.now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-w.Kick:
		case <-timer.C:
		}
	}
}

// look hands on the Secret's roots if they changed and, when leading,
// moves the rotation on; it returns when to look again.
func (w *Rotation) look(ctx context.Context, get func(string) (*corev1.Secret, error), last *[]byte) time.Time {
	s, err := get(w.Name)
	if err != nil {
		w.Logger.Error("ca secret unreadable: the roots in use stay", "secret", w.Namespace+"/"+w.Name, "err", err)
		return time.Time{}
	}
	r, err := RootsFromSecret(s)
	if err != nil {
		w.Logger.Error("ca secret invalid: the roots in use stay", "err", err)
		return time.Time{}
	}
	if key := append(append([]byte{}, r.CertPEM...), r.BundlePEM()...); !bytes.Equal(key, *last) {
		w.OnRoots(r)
		*last = key
	}
	if w.Leads == nil || !w.Leads() {
		return w.now().Add(time.Minute) // the leader may be gone
	}
	next, changed, wake, err := Step(r, w.now(), w.Timing)
	if err != nil {
		w.Logger.Error("ca root rotation", "err", err)
		return w.now().Add(time.Minute)
	}
	if !changed {
		return wake
	}
	cp := s.DeepCopy()
	next.apply(cp)
	if _, err := w.Client.CoreV1().Secrets(w.Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
		if !apierrors.IsConflict(err) {
			w.Logger.Error("ca root rotation: update secret", "err", err)
		}
		return w.now().Add(time.Second) // the informer brings the newer version
	}
	w.Logger.Info("ca root rotation", "phase", phaseName(next.Phase), "from", phaseName(r.Phase),
		"next_step", wake)
	return time.Time{} // the informer brings the update
}

func phaseName(p string) string {
	if p == PhaseNone {
		return "none"
	}
	return p
}
