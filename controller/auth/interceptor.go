package auth

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// Options configure an Authenticator.
type Options struct {
	Reviewer  TokenReviewer
	Audiences []string
	// NodeServiceAccounts (namespace/name) may call at all.
	NodeServiceAccounts []string
	// CacheTTL keeps a successful review (default 10s).
	CacheTTL time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// maxCache bounds the review cache; past it, expired entries are swept and
// if still full the cache is reset.
const maxCache = 10000

// Authenticator is a gRPC interceptor pair that puts the Caller in the
// context of every call.
type Authenticator struct {
	o Options

	mu    sync.Mutex
	cache map[[32]byte]cached // by token hash; guarded by mu
}

type cached struct {
	caller  Caller
	expires time.Time
}

// New returns an Authenticator.
func New(o Options) *Authenticator {
	if o.CacheTTL <= 0 {
		o.CacheTTL = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authenticator{o: o, cache: map[[32]byte]cached{}}
}

type callerKey struct{}

// CallerFrom returns the caller the interceptor put in ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying c (for tests of handlers).
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Unary is the unary server interceptor.
func (a *Authenticator) Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	c, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return h(WithCaller(ctx, c), req)
}

// Stream is the stream server interceptor.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	c, err := a.authenticate(ss.Context())
	if err != nil {
		return err
	}
	return h(srv, &callerStream{ServerStream: ss, ctx: WithCaller(ss.Context(), c)})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// authenticate reviews the call's token and checks the service account.
func (a *Authenticator) authenticate(ctx context.Context) (Caller, error) {
	tok := configapi.BearerToken(ctx)
	if tok == "" {
		return Caller{}, status.Error(codes.Unauthenticated, "missing bearer token in the authorization metadata")
	}
	c, err := a.review(ctx, tok)
	if err != nil {
		return Caller{}, err
	}
	if !slices.Contains(a.o.NodeServiceAccounts, c.ServiceAccount) {
		return Caller{}, status.Errorf(codes.PermissionDenied, "service account %s is not a node agent (allowed: %v)", c.ServiceAccount, a.o.NodeServiceAccounts)
	}
	if c.NodeName == "" {
		return Caller{}, status.Errorf(codes.PermissionDenied, "token of %s is not bound to a pod on a node", c.ServiceAccount)
	}
	return c, nil
}

func (a *Authenticator) review(ctx context.Context, tok string) (Caller, error) {
	key := sha256.Sum256([]byte(tok))
	now := a.o.Now()
	a.mu.Lock()
	e, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.caller, nil
	}
	st, err := a.o.Reviewer.Review(ctx, tok, a.o.Audiences)
	if err != nil {
		a.o.Logger.Warn("token review failed", "err", err)
		return Caller{}, status.Error(codes.Unavailable, "token review failed")
	}
	c, err := callerFrom(st, a.o.Audiences)
	if err != nil {
		return Caller{}, status.Error(codes.Unauthenticated, err.Error())
	}
	a.store(key, cached{caller: c, expires: now.Add(a.o.CacheTTL)})
	return c, nil
}

func (a *Authenticator) store(key [32]byte, e cached) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCache {
		now := a.o.Now()
		for k, v := range a.cache {
			if !now.Before(v.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= maxCache {
			clear(a.cache)
		}
	}
	a.cache[key] = e
}

// AuthorizeNode checks that the caller in ctx is bound to node: a node
// component may only read its own node's view.
func AuthorizeNode(ctx context.Context, node string) error {
	c, ok := CallerFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	if c.NodeName != node {
		return status.Errorf(codes.PermissionDenied, "caller %s (pod %s) runs on node %q and may not read node %q's config", c.ServiceAccount, c.PodName, c.NodeName, node)
	}
	return nil
}
