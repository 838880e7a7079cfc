package controller

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/controller/stream"
)

// meshService implements agentmesh.v1.Mesh: config streams from the
// stream server, certificates from the CA.
type meshService struct {
	*stream.Server
	ca *ca.CA
}

var _ configapi.MeshServer = meshService{}

// SignCertificate signs for the authenticated caller's node.
func (m meshService) SignCertificate(ctx context.Context, req *configapi.SignRequest) (*configapi.SignResponse, error) {
	c, ok := auth.CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	chain, err := m.ca.Sign(ctx, c.NodeName, req.CSRPEM)
	var re *ca.RefusedError
	switch {
	case err == nil:
		return &configapi.SignResponse{ChainPEM: chain}, nil
	case errors.As(err, &re) && refusedForCaller(re.Reason):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.As(err, &re) && re.Reason != ca.ReasonSign:
		return nil, status.Error(codes.InvalidArgument, err.Error())
	default:
		return nil, status.Error(codes.Internal, err.Error())
	}
}

// refusedForCaller reports whether a refusal is about who asks (the
// identity is not theirs to have), not about a malformed request.
func refusedForCaller(reason string) bool {
	return reason == ca.ReasonNoPod || reason == ca.ReasonNoSA || reason == ca.ReasonTrustDomain
}
