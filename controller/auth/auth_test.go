package auth

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
)

type countingReviewer struct {
	calls atomic.Int32
	st    authnv1.TokenReviewStatus
	err   error
}

func (r *countingReviewer) Review(_ context.Context, _ string, auds []string) (authnv1.TokenReviewStatus, error) {
	r.calls.Add(1)
	st := r.st
	if st.Audiences == nil {
		st.Audiences = auds
	}
	return st, r.err
}

func bound(user, node string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: user,
		Extra: map[string]authnv1.ExtraValue{ExtraPodName: {"agent-x"}, ExtraPodUID: {"u1"}, ExtraNodeName: {node}}}}
}

func call(a *Authenticator, tok string) (Caller, error) {
	ctx := context.Background()
	if tok != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok))
	}
	var got Caller
	_, err := a.Unary(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
		got, _ = CallerFrom(ctx)
		return nil, nil
	})
	return got, err
}

func TestAuthenticate(t *testing.T) {
	tests := []struct {
		name   string
		tok    string
		st     authnv1.TokenReviewStatus
		revErr error
		code   codes.Code
		msg    string
	}{
		{"ok", "t", bound("system:serviceaccount:agentmesh-system:agentmesh-node", "n1"), nil, codes.OK, ""},
		{"no token", "", authnv1.TokenReviewStatus{}, nil, codes.Unauthenticated, "missing bearer token"},
		{"rejected", "t", authnv1.TokenReviewStatus{Error: "expired"}, nil, codes.Unauthenticated, "expired"},
		{"wrong audience", "t", func() authnv1.TokenReviewStatus {
			s := bound("system:serviceaccount:agentmesh-system:agentmesh-node", "n1")
			s.Audiences = []string{"kubernetes"}
			return s
		}(), nil, codes.Unauthenticated, "audiences"},
		{"a user, not a service account", "t", bound("alice", "n1"), nil, codes.Unauthenticated, "not a service account"},
		{"other service account", "t", bound("system:serviceaccount:apps:web", "n1"), nil, codes.PermissionDenied, "not a node agent"},
		{"not bound to a node", "t", bound("system:serviceaccount:agentmesh-system:agentmesh-node", ""), nil, codes.PermissionDenied, "not bound"},
		{"apiserver down", "t", authnv1.TokenReviewStatus{}, errors.New("connection refused"), codes.Unavailable, "token review failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(Options{Reviewer: &countingReviewer{st: tt.st, err: tt.revErr}, Audiences: []string{"agentmesh"},
				NodeServiceAccounts: []string{"agentmesh-system/agentmesh-node"}})
			c, err := call(a, tt.tok)
			s := status.Convert(err)
			if s.Code() != tt.code || !strings.Contains(s.Message(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.code, tt.msg)
			}
			want := Caller{ServiceAccount: "agentmesh-system/agentmesh-node", PodName: "agent-x", PodUID: "u1", NodeName: "n1"}
			if tt.code == codes.OK && c != want {
				t.Errorf("caller = %+v, want %+v", c, want)
			}
		})
	}
}

func TestReviewCache(t *testing.T) {
	r := &countingReviewer{st: bound("system:serviceaccount:ns:node", "n1")}
	now := time.Unix(1000, 0)
	a := New(Options{Reviewer: r, NodeServiceAccounts: []string{"ns/node"}, CacheTTL: 10 * time.Second,
		Now: func() time.Time { return now }})
	for range 3 {
		if _, err := call(a, "t"); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("%d reviews for 3 calls within the ttl, want 1", n)
	}
	now = now.Add(11 * time.Second)
	call(a, "t")
	if n := r.calls.Load(); n != 2 {
		t.Fatalf("%d reviews after the ttl, want 2", n)
	}
}

func TestAuthorizeNode(t *testing.T) {
	ctx := WithCaller(context.Background(), Caller{ServiceAccount: "ns/node", NodeName: "n1"})
	if err := AuthorizeNode(ctx, "n1"); err != nil {
		t.Errorf("own node: %v", err)
	}
	if err := AuthorizeNode(ctx, "n2"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("other node: %v, want PermissionDenied", err)
	}
	if err := AuthorizeNode(context.Background(), "n1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no caller: %v, want Unauthenticated", err)
	}
}
