package configapi

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmesh/agentmesh/api/configapi/proto/agentmesh/v1"
)

// Codecs, by gRPC content-subtype. A server answers a call with the codec
// its client chose; the Client chooses CodecName.
const (
	// CodecName is the codec of agentmesh.v1.Mesh: the protobuf wire of
	// proto/agentmesh/v1/mesh.proto (content-type
	// application/grpc+agentmesh-proto), converted to and from the Go types.
	// It is not grpc's "proto" codec, which only takes generated messages.
	CodecName = "agentmesh-proto"
	// JSONCodecName is encoding/json on the Go types (content-type
	// application/grpc+json), the wire before the protobuf one: still
	// served, for debugging, but no client uses it by default.
	JSONCodecName = "json"
)

// Size limits for messages on the wire.
const (
	// MaxRequestSize bounds what the controller accepts from a node.
	MaxRequestSize = 1 << 20
	// MaxConfigSize bounds one ConfigResponse a node accepts.
	MaxConfigSize = 256 << 20
)

func init() {
	encoding.RegisterCodec(protoCodec{})
	encoding.RegisterCodec(jsonCodec{})
}

// codec returns the codec named name, nil if none.
func codec(name string) encoding.Codec {
	switch name {
	case CodecName:
		return protoCodec{}
	case JSONCodecName:
		return jsonCodec{}
	}
	return nil
}

// protoCodec encodes the four message types (pointers to ConfigRequest,
// ConfigResponse, SignRequest, SignResponse) as their protobuf messages.
type protoCodec struct{}

func (protoCodec) Name() string { return CodecName }

// marshalOptions: Deterministic sorts map entries (labels, named ports), so
// equal messages encode to equal bytes.
var marshalOptions = proto.MarshalOptions{Deterministic: true}

func (c protoCodec) Marshal(v any) ([]byte, error) {
	var m proto.Message
	switch v := v.(type) {
	case *Encoded:
		return v.bytesFor(c)
	case *ConfigRequest:
		m = requestToProto(v)
	case *ConfigResponse:
		r, err := responseToProto(v)
		if err != nil {
			return nil, fmt.Errorf("proto codec: marshal %T: %w", v, err)
		}
		m = r
	case *SignRequest:
		m = signRequestToProto(v)
	case *SignResponse:
		m = signResponseToProto(v)
	default:
		return nil, fmt.Errorf("proto codec: cannot marshal %T", v)
	}
	b, err := marshalOptions.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("proto codec: marshal %T: %w", v, err)
	}
	return b, nil
}

func (protoCodec) Unmarshal(data []byte, v any) error {
	if err := unmarshalProto(data, v); err != nil {
		return fmt.Errorf("proto codec: unmarshal %T: %w", v, err)
	}
	return nil
}

func unmarshalProto(data []byte, v any) error {
	switch v := v.(type) {
	case *ConfigRequest:
		var m pb.ConfigRequest
		if err := decodeProto(data, &m); err != nil {
			return err
		}
		*v = requestFromProto(&m)
	case *ConfigResponse:
		// Not through the generated message: decodeResponse is several times
		// faster, with the same result (decode.go).
		r, err := decodeResponse(data)
		if err != nil {
			return err
		}
		*v = r
	case *SignRequest:
		var m pb.SignRequest
		if err := decodeProto(data, &m); err != nil {
			return err
		}
		*v = signRequestFromProto(&m)
	case *SignResponse:
		var m pb.SignResponse
		if err := decodeProto(data, &m); err != nil {
			return err
		}
		*v = signResponseFromProto(&m)
	default:
		return fmt.Errorf("not a message type of %s", ServiceName)
	}
	return nil
}

// decodeProto unmarshals data into m and rejects data that contradicts m's
// schema at the top level: a field m declares, with another wire type. The
// protobuf wire does not name its message type, and fields m does not
// declare are skipped (a newer peer may send them), so this is what tells
// most messages of another type apart (a ConfigRequest's node, a string,
// where a ConfigResponse has its version, a varint).
func decodeProto(data []byte, m proto.Message) error {
	if err := proto.Unmarshal(data, m); err != nil {
		return err
	}
	r := m.ProtoReflect()
	unknown := r.GetUnknown()
	if len(unknown) == 0 {
		return nil
	}
	fields := r.Descriptor().Fields()
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeField(unknown)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if fd := fields.ByNumber(num); fd != nil {
			return fmt.Errorf("%w: field %d (%s) has wire type %d, not that of a %s", ErrInvalid, num, fd.Name(), typ, fd.Kind())
		}
		unknown = unknown[n:]
	}
	return nil
}

// jsonCodec marshals messages with encoding/json.
type jsonCodec struct{}

func (jsonCodec) Name() string { return JSONCodecName }

func (c jsonCodec) Marshal(v any) ([]byte, error) {
	if e, ok := v.(*Encoded); ok {
		return e.bytesFor(c)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json codec: marshal %T: %w", v, err)
	}
	return b, nil
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("json codec: unmarshal %T: %w", v, err)
	}
	return nil
}

// Encoded is a message encoded once (Encode) and then sent on any number of
// streams as is: the codec hands its bytes to gRPC without encoding again.
// Its bytes are never modified after Encode.
type Encoded struct {
	b     []byte
	codec string     // the codec that encoded b
	zero  func() any // a new message of the encoded type
}

// Encode encodes m, a *ConfigResponse (or *ConfigRequest, *SignRequest,
// *SignResponse), with the stream codec (CodecName). On a stream of
// another codec (JSONCodecName) the message is decoded and encoded again.
func Encode(m any) (*Encoded, error) { return encode(protoCodec{}, m) }

func encode(c encoding.Codec, m any) (*Encoded, error) {
	var zero func() any
	switch m := m.(type) {
	case *Encoded:
		return m, nil
	case *ConfigRequest:
		zero = func() any { return new(ConfigRequest) }
	case *ConfigResponse:
		zero = func() any { return new(ConfigResponse) }
	case *SignRequest:
		zero = func() any { return new(SignRequest) }
	case *SignResponse:
		zero = func() any { return new(SignResponse) }
	default:
		return nil, fmt.Errorf("encode %T: not a message type of %s", m, ServiceName)
	}
	b, err := c.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Encoded{b: b, codec: c.Name(), zero: zero}, nil
}

// bytesFor returns e's bytes as codec c writes them: as is when c encoded
// them, else decoded and encoded again with c.
func (e *Encoded) bytesFor(c encoding.Codec) ([]byte, error) {
	if e.codec == c.Name() {
		return e.b, nil
	}
	from := codec(e.codec)
	if from == nil || e.zero == nil {
		return nil, fmt.Errorf("%s: Encoded not made by Encode", c.Name())
	}
	m := e.zero()
	if err := from.Unmarshal(e.b, m); err != nil {
		return nil, fmt.Errorf("re-encode for %s: %w", c.Name(), err)
	}
	return c.Marshal(m)
}

// Len is the encoded size in bytes.
func (e *Encoded) Len() int { return len(e.b) }
