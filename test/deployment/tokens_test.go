package deployment

import (
	"context"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// saConfig is a client config authenticated as the service account ns/name
// by a real token from the TokenRequest API (the apiserver verifies it like
// any pod's token), for the apiserver's own audience.
func saConfig(ctx context.Context, t *testing.T, admin *rest.Config, ns, name string) *rest.Config {
	t.Helper()
	tok := requestToken(ctx, t, admin, ns, name, &authnv1.TokenRequest{})
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = tok
	return cfg
}

// requestToken creates a token for ns/name as the admin.
func requestToken(ctx context.Context, t *testing.T, admin *rest.Config, ns, name string, tr *authnv1.TokenRequest) string {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(admin)
	if tr.Spec.ExpirationSeconds == nil {
		one := int64(3600)
		tr.Spec.ExpirationSeconds = &one
	}
	res, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, name, err)
	}
	return res.Status.Token
}
