package lab

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// PodToken returns a ServiceAccount token for Kubernetes pod ns/name: its
// service account's, bound to the pod (TokenRequest with a Pod
// boundObjectRef, as the kubelet's projected token), so TokenReview tells
// the pod and node names. An empty audience means the apiserver's.
func (l *Lab) PodToken(ctx context.Context, ns, name, audience string, ttl time.Duration) (string, error) {
	if l.kube == nil {
		return "", errNotKube
	}
	pod, err := l.kube.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("pod token: %w", err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(int64(ttl / time.Second)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	sa := or(pod.Spec.ServiceAccountName, "default")
	out, err := l.kube.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("pod token for %s/%s: %w", ns, name, err)
	}
	return out.Status.Token, nil
}
