package configapi

import (
	"context"
	"encoding/json"
	"net"
	"reflect"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

func TestCodecRegistered(t *testing.T) {
	for _, name := range []string{CodecName, JSONCodecName} {
		c := encoding.GetCodec(name)
		if c == nil {
			t.Fatalf("codec %q not registered", name)
		}
		in := &ConfigRequest{Node: "n1", Component: ComponentAgentd, AckVersion: 7, Error: "x"}
		b, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out ConfigRequest
		if err := c.Unmarshal(b, &out); err != nil || out != *in {
			t.Fatalf("%s: round trip = %+v, %v", name, out, err)
		}
	}
	if c := encoding.GetCodecV2("proto"); c == nil || c.Name() != "proto" {
		t.Error("grpc's proto codec was replaced")
	}
}

// FuzzUnmarshal: the codecs never panic on bytes from the network, and
// what the proto codec accepts it encodes again to a message that decodes
// to the same value (the decoded form is canonical).
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"node":"n1","component":"agentd","ackVersion":3}`))
	f.Add([]byte(`{"version":1,"full":true,"workloads":[{"uid":"a","ips":["10.0.0.1"]}]}`))
	f.Add([]byte(`{"csrPEM":"AAAA"}`))
	f.Add([]byte(`{"version":1,"services":[{"name":"s","routes":[{"name":"ns/r","port":80,"match":{"pathType":"PathPrefix","path":"/"},"backends":[{"service":"ns/b","port":80,"weight":1}],"timeout":1000000000,"retry":{"attempts":2,"codes":[503]}}]}]}`))
	f.Add([]byte(`{"version":1,"services":[{"name":"s","traffic":{"name":"ns/t","loadBalancer":{"algorithm":"ConsistentHash","hash":{"header":"x-user"}},"timeouts":{"connect":1000000},"retryBudget":{"ratio":0.2,"minPerSecond":3},"rateLimit":{"perEndpoint":{"rate":1.5,"burst":2},"tools":{"search":{"rate":1,"burst":1}}}}}]}`))
	for _, m := range []any{
		representative(),
		&ConfigResponse{Services: []meshconfig.Service{{Name: "web", Namespace: "shop", Routes: routes()}}},
		&ConfigResponse{Services: []meshconfig.Service{{Name: "web", Namespace: "shop", Traffic: traffic()}, {Name: "parts", Namespace: "shop", Traffic: emptyParts()}}},
		&ConfigRequest{Node: "n1", Component: ComponentAgentd, AckVersion: 3},
		&SignRequest{CSRPEM: []byte("csr")},
	} {
		b, err := protoCodec{}.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j := jsonCodec{}
		j.Unmarshal(data, &ConfigRequest{})
		j.Unmarshal(data, &ConfigResponse{})
		j.Unmarshal(data, &SignRequest{})

		p := protoCodec{}
		p.Unmarshal(data, &ConfigRequest{})
		p.Unmarshal(data, &SignRequest{})
		p.Unmarshal(data, &SignResponse{})
		var r ConfigResponse
		if err := p.Unmarshal(data, &r); err != nil {
			return
		}
		b, err := p.Marshal(&r)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", r, err)
		}
		var again ConfigResponse
		if err := p.Unmarshal(b, &again); err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoded message decodes to %+v, %v; want %+v", again, err, r)
		}
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
	if len(b) != e.Len() || &b[0] != &e.b[0] {
		t.Fatalf("marshal of Encoded = %d bytes, want its own %d", len(b), e.Len())
	}
	var out ConfigResponse
	if err := c.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("decoded %+v", out)
	}
	if again, err := Encode(e); err != nil || again != e {
		t.Errorf("Encode of an Encoded = %p, %v; want it as is", again, err)
	}
	if _, err := Encode(&struct{}{}); err == nil {
		t.Error("Encode of a foreign type accepted")
	}
}

// TestEncodedOnJSONStream: on a stream of the JSON codec, an Encoded
// message is encoded again, as JSON.
func TestEncodedOnJSONStream(t *testing.T) {
	in := representative()
	e, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jsonCodec{}.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(in)
	if string(b) != string(want) {
		t.Fatalf("JSON of Encoded:\n%s\nwant\n%s", b, want)
	}
	if _, err := (jsonCodec{}).Marshal(&Encoded{b: []byte("x")}); err == nil {
		t.Error("an Encoded not made by Encode was re-encoded")
	}
}

// TestGRPC: a Client talks to a server through the proto codec by default
// and through the JSON one on request; Encoded messages reach either.
func TestGRPC(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	srv := &testServer{resp: representative(), contentTypes: make(chan string, 1)}
	Register(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := NewClient(cc)
	ctx := t.Context()

	for _, tc := range []struct {
		opts        []grpc.CallOption
		contentType string
	}{
		{nil, "application/grpc+agentmesh-proto"},
		{[]grpc.CallOption{grpc.CallContentSubtype(JSONCodecName)}, "application/grpc+json"},
	} {
		st, err := c.StreamConfig(ctx, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&ConfigRequest{Node: "n1", Component: ComponentZtunnel}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // sent as Encoded, then as a ConfigResponse
			got, err := st.Recv()
			if err != nil {
				t.Fatalf("%s: recv %d: %v", tc.contentType, i, err)
			}
			if !reflect.DeepEqual(got, srv.resp) {
				t.Errorf("%s: response %d differs", tc.contentType, i)
			}
		}
		st.CloseSend()
		if ct := <-srv.contentTypes; ct != tc.contentType {
			t.Errorf("server saw content-type %q, want %q", ct, tc.contentType)
		}
		out, err := c.SignCertificate(ctx, &SignRequest{CSRPEM: []byte("csr")}, tc.opts...)
		if err != nil || string(out.ChainPEM) != "chain for csr" {
			t.Errorf("%s: SignCertificate = %+v, %v", tc.contentType, out, err)
		}
	}
}

type testServer struct {
	resp         *ConfigResponse
	contentTypes chan string
}

func (s *testServer) StreamConfig(st ConfigStream) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	defer func() { s.contentTypes <- md.Get("content-type")[0] }()
	req, err := st.Recv()
	if err != nil || req.Node != "n1" || req.Component != ComponentZtunnel {
		return err
	}
	e, err := Encode(s.resp)
	if err != nil {
		return err
	}
	if err := st.SendMsg(e); err != nil {
		return err
	}
	return st.Send(s.resp)
}

func (s *testServer) SignCertificate(_ context.Context, r *SignRequest) (*SignResponse, error) {
	return &SignResponse{ChainPEM: []byte("chain for " + string(r.CSRPEM))}, nil
}
