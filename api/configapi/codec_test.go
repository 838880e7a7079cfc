package configapi

import (
	"testing"

	"google.golang.org/grpc/encoding"
)

func TestCodecRegistered(t *testing.T) {
	c := encoding.GetCodec(CodecName)
	if c == nil {
		t.Fatal("json codec not registered")
	}
	in := &ConfigRequest{Node: "n1", Component: ComponentAgentd, AckVersion: 7, Error: "x"}
	b, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ConfigRequest
	if err := c.Unmarshal(b, &out); err != nil || out != *in {
		t.Fatalf("round trip = %+v, %v", out, err)
	}
}

// FuzzUnmarshal: the codec never panics on bytes from the network.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"node":"n1","component":"agentd","ackVersion":3}`))
	f.Add([]byte(`{"version":1,"full":true,"workloads":[{"uid":"a","ips":["10.0.0.1"]}]}`))
	f.Add([]byte(`{"csrPEM":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := jsonCodec{}
		c.Unmarshal(data, &ConfigRequest{})
		c.Unmarshal(data, &ConfigResponse{})
		c.Unmarshal(data, &SignRequest{})
	})
}

// TestEncodedPassesThrough: an Encoded message is sent as encoded, and
// decodes into what was encoded.
func TestEncodedPassesThrough(t *testing.T) {
	c := encoding.GetCodec(CodecName)
	in := &ConfigResponse{Version: 9, More: true, TrustDomain: "td", RemovedServices: []string{"a/b"}}
	e, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != e.Len() {
		t.Fatalf("marshal of Encoded = %d bytes, want its %d", len(b), e.Len())
	}
	var out ConfigResponse
	if err := c.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Version != 9 || !out.More || out.TrustDomain != "td" || len(out.RemovedServices) != 1 {
		t.Fatalf("decoded %+v", out)
	}
}
