package configapi

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ServiceName is the gRPC service.
const ServiceName = "agentmesh.v1.Mesh"

// Full method names.
const (
	StreamConfigMethod    = "/" + ServiceName + "/StreamConfig"
	SignCertificateMethod = "/" + ServiceName + "/SignCertificate"
)

// AuthorizationKey is the metadata key of the bearer token.
const AuthorizationKey = "authorization"

// ConfigStream is the server side of StreamConfig.
type ConfigStream = grpc.BidiStreamingServer[ConfigRequest, ConfigResponse]

// ConfigClient is the client side of StreamConfig.
type ConfigClient = grpc.BidiStreamingClient[ConfigRequest, ConfigResponse]

// MeshServer is what the controller implements.
type MeshServer interface {
	StreamConfig(ConfigStream) error
	SignCertificate(context.Context, *SignRequest) (*SignResponse, error)
}

// ServiceDesc describes agentmesh.v1.Mesh for grpc.Server.RegisterService.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*MeshServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "SignCertificate", Handler: signHandler}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "StreamConfig",
		Handler:       streamHandler,
		ServerStreams: true,
		ClientStreams: true,
	}},
	Metadata: "agentmesh/v1/mesh.proto",
}

// Register registers srv on s.
func Register(s grpc.ServiceRegistrar, srv MeshServer) { s.RegisterService(&ServiceDesc, srv) }

func streamHandler(srv any, stream grpc.ServerStream) error {
	return srv.(MeshServer).StreamConfig(&grpc.GenericServerStream[ConfigRequest, ConfigResponse]{ServerStream: stream})
}

func signHandler(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
	in := new(SignRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if ic == nil {
		return srv.(MeshServer).SignCertificate(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: SignCertificateMethod}
	return ic(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(MeshServer).SignCertificate(ctx, req.(*SignRequest))
	})
}

// Client calls agentmesh.v1.Mesh with the codec CodecName (protobuf).
type Client struct{ cc grpc.ClientConnInterface }

// NewClient returns a client on cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// StreamConfig opens a config stream.
func (c *Client) StreamConfig(ctx context.Context, opts ...grpc.CallOption) (ConfigClient, error) {
	opts = append([]grpc.CallOption{grpc.CallContentSubtype(CodecName), grpc.MaxCallRecvMsgSize(MaxConfigSize)}, opts...)
	s, err := c.cc.NewStream(ctx, &ServiceDesc.Streams[0], StreamConfigMethod, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[ConfigRequest, ConfigResponse]{ClientStream: s}, nil
}

// SignCertificate asks the CA to sign a CSR.
func (c *Client) SignCertificate(ctx context.Context, in *SignRequest, opts ...grpc.CallOption) (*SignResponse, error) {
	opts = append([]grpc.CallOption{grpc.CallContentSubtype(CodecName)}, opts...)
	out := new(SignResponse)
	if err := c.cc.Invoke(ctx, SignCertificateMethod, in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

// WithToken returns ctx carrying token as the outgoing bearer token.
func WithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, AuthorizationKey, "Bearer "+token)
}

// BearerToken returns the bearer token of an incoming call, "" if none.
func BearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(AuthorizationKey) {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && tok != "" {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}
