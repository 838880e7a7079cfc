// Package auth authenticates node components by their bound ServiceAccount
// token (TokenReview) and authorizes them: only the allowed node-agent
// service accounts, and only for the node their token is bound to.
package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the pod binding in a bound token's user extra.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

const saPrefix = "system:serviceaccount:"

// Caller is an authenticated node component.
type Caller struct {
	ServiceAccount string // namespace/name
	PodName        string
	PodUID         string
	NodeName       string
}

// TokenReviewer reviews a bearer token for some audiences.
type TokenReviewer interface {
	Review(ctx context.Context, token string, audiences []string) (authnv1.TokenReviewStatus, error)
}

// KubeReviewer reviews tokens with the apiserver's TokenReview API.
type KubeReviewer struct{ Client kubernetes.Interface }

// Review implements TokenReviewer.
func (k KubeReviewer) Review(ctx context.Context, token string, audiences []string) (authnv1.TokenReviewStatus, error) {
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}
	res, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		return authnv1.TokenReviewStatus{}, fmt.Errorf("token review: %w", err)
	}
	return res.Status, nil
}

// callerFrom turns an authenticated review into a Caller.
func callerFrom(st authnv1.TokenReviewStatus, audiences []string) (Caller, error) {
	if !st.Authenticated {
		return Caller{}, fmt.Errorf("token not authenticated: %s", nonEmpty(st.Error, "no reason given"))
	}
	if len(audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
		return Caller{}, fmt.Errorf("token audiences %q do not include %q", st.Audiences, audiences)
	}
	rest, ok := strings.CutPrefix(st.User.Username, saPrefix)
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" {
		return Caller{}, fmt.Errorf("user %q is not a service account", st.User.Username)
	}
	return Caller{
		ServiceAccount: ns + "/" + name,
		PodName:        first(st.User.Extra[ExtraPodName]),
		PodUID:         first(st.User.Extra[ExtraPodUID]),
		NodeName:       first(st.User.Extra[ExtraNodeName]),
	}, nil
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
