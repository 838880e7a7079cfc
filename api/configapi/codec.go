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
