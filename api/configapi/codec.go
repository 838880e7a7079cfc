package configapi

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/encoding"
)

// CodecName is the gRPC content-subtype of the JSON codec
// (content-type application/grpc+json).
const CodecName = "json"

// Size limits for messages on the wire.
const (
	// MaxRequestSize bounds what the controller accepts from a node.
	MaxRequestSize = 1 << 20
	// MaxConfigSize bounds one ConfigResponse a node accepts.
	MaxConfigSize = 256 << 20
)

func init() { encoding.RegisterCodec(jsonCodec{}) }

// jsonCodec marshals messages with encoding/json.
type jsonCodec struct{}

func (jsonCodec) Name() string { return CodecName }

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if e, ok := v.(*Encoded); ok {
		return e.b, nil
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
type Encoded struct{ b []byte }

// Encode encodes m with the stream codec.
func Encode(m any) (*Encoded, error) {
	b, err := jsonCodec{}.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Encoded{b: b}, nil
}

// Len is the encoded size in bytes.
func (e *Encoded) Len() int { return len(e.b) }
