package configapi

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/agentmesh/agentmesh/api/configapi/proto/agentmesh/v1"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// decodeResponseGenerated is the reference decodeResponse must agree with:
// protobuf-go into the generated message, then the conversion.
func decodeResponseGenerated(data []byte) (ConfigResponse, error) {
	var m pb.ConfigResponse
	if err := decodeProto(data, &m); err != nil {
		return ConfigResponse{}, err
	}
	return responseFromProto(&m)
}

// sameDecode fails t unless both decoders fail on data, or both succeed
// with DeepEqual values.
func sameDecode(t *testing.T, data []byte) {
	t.Helper()
	got, gotErr := decodeResponse(data)
	want, wantErr := decodeResponseGenerated(data)
	switch {
	case gotErr != nil && wantErr == nil:
		t.Fatalf("decodeResponse fails where the generated path does not: %v\ndata %x", gotErr, data)
	case gotErr == nil && wantErr != nil:
		t.Fatalf("decodeResponse accepts what the generated path refuses (%v)\ndata %x", wantErr, data)
	case gotErr == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("the decoders differ (-generated +decodeResponse):\n%s\ndata %x", cmp.Diff(want, got, cmpOpts...), data)
	}
}

func mustMarshal(t testing.TB, r *ConfigResponse) []byte {
	t.Helper()
	b, err := protoCodec{}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeResponseDifferential(t *testing.T) {
	inputs := [][]byte{nil, {}, mustMarshal(t, representative()), mustMarshal(t, &ConfigResponse{})}
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 11))
		a, b := mustMarshal(t, randResponse(r)), mustMarshal(t, randResponse(r))
		// a then b is a merged into b: workloads of both, b's scalars.
		inputs = append(inputs, a, slices.Concat(a, b))
	}
	for _, data := range inputs {
		sameDecode(t, data)
	}
}

// TestDecodeResponseScrambled: the wire another writer could send for the
// same message (fields in any order, message fields split in occurrences
// that merge, scalars overridden, probe ports packed or not, unknown
// fields) decodes alike both ways.
func TestDecodeResponseScrambled(t *testing.T) {
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 13))
		m, err := responseToProto(randResponse(r))
		if err != nil {
			t.Fatal(err)
		}
		if seed%5 == 0 {
			m, _ = responseToProto(representative())
		}
		sameDecode(t, scramble(r, m.ProtoReflect(), true))
	}
}

// scramble encodes m as another valid writer could; top is the
// ConfigResponse, where a known field with another wire type is an error.
func scramble(r *rand.Rand, m protoreflect.Message, top bool) []byte {
	var fields [][][]byte // per field, its occurrences in order
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var occ [][]byte
		num := fd.Number()
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.Uint32Kind: // probe ports
			l := v.List()
			for i := 0; i < l.Len(); {
				n := 1 + r.IntN(l.Len()-i)
				if r.IntN(2) == 0 {
					var p []byte
					for j := i; j < i+n; j++ {
						p = protowire.AppendVarint(p, uint64(l.Get(j).Uint()))
					}
					occ = append(occ, protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), p))
				} else {
					for j := i; j < i+n; j++ {
						occ = append(occ, scalarField(fd, l.Get(j)))
					}
				}
				i += n
			}
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				occ = append(occ, messageField(num, scramble(r, l.Get(i).Message(), false)))
			}
		case fd.IsMap(): // entries in any order, key and value in either
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := scalarField(fd.MapKey(), k.Value())
				var val []byte
				if fd.MapValue().Message() != nil {
					val = messageField(2, scramble(r, mv.Message(), false))
				} else {
					val = scalarField(fd.MapValue(), mv)
				}
				if r.IntN(2) == 0 {
					key, val = val, key
				}
				occ = append(occ, messageField(num, slices.Concat(key, val)))
				return true
			})
			r.Shuffle(len(occ), func(i, j int) { occ[i], occ[j] = occ[j], occ[i] })
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				occ = append(occ, scalarField(fd, l.Get(i)))
			}
		case fd.Message() != nil:
			if r.IntN(3) == 0 {
				a, b := split(r, v.Message())
				occ = append(occ, messageField(num, scramble(r, a, false)), messageField(num, scramble(r, b, false)))
			} else {
				occ = append(occ, messageField(num, scramble(r, v.Message(), false)))
			}
		default:
			if r.IntN(4) == 0 {
				occ = append(occ, scalarField(fd, bogus(r, fd)))
			}
			occ = append(occ, scalarField(fd, v))
		}
		fields = append(fields, occ)
		return true
	})
	for range r.IntN(3) {
		num := protowire.Number(100 + r.IntN(1000))
		if !top && r.IntN(2) == 0 { // a known number with another wire type: skipped
			num = protowire.Number(1 + r.IntN(m.Descriptor().Fields().Len()))
		}
		var b []byte
		switch r.IntN(4) {
		case 0:
			b = protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), r.Uint32())
		case 1:
			b = protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), r.Uint64())
		case 2:
			b = protowire.AppendTag(nil, num, protowire.StartGroupType)
			b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), r.Uint64())
			b = protowire.AppendTag(b, num, protowire.EndGroupType)
		case 3:
			if top {
				b = protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), "future")
			} else {
				b = protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), r.Uint64())
			}
		}
		fields = append(fields, [][]byte{b})
	}
	// A random interleaving that keeps each field's occurrences in order.
	var out []byte
	for len(fields) > 0 {
		i := r.IntN(len(fields))
		out = append(out, fields[i][0]...)
		if fields[i] = fields[i][1:]; len(fields[i]) == 0 {
			fields = slices.Delete(fields, i, i+1)
		}
	}
	return out
}

// split returns two messages whose merge is m.
func split(r *rand.Rand, m protoreflect.Message) (a, b protoreflect.Message) {
	a, b = m.New(), m.New()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l, k := v.List(), r.IntN(v.List().Len()+1)
			la, lb := a.Mutable(fd).List(), b.Mutable(fd).List()
			for i := range l.Len() {
				if i < k {
					la.Append(l.Get(i))
				} else {
					lb.Append(l.Get(i))
				}
			}
		case fd.IsMap():
			// A key in both keeps b's value (entries replace, not merge):
			// a may have a bogus one.
			ma, mb := a.Mutable(fd).Map(), b.Mutable(fd).Map()
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				switch r.IntN(3) {
				case 0:
					ma.Set(k, mv)
				case 1:
					mb.Set(k, mv)
				default:
					ma.Set(k, bogusEntry(r, fd.MapValue(), mv))
					mb.Set(k, mv)
				}
				return true
			})
		case fd.Message() != nil:
			switch r.IntN(3) {
			case 0:
				a.Set(fd, v)
			case 1:
				b.Set(fd, v)
			default:
				sa, sb := split(r, v.Message())
				a.Set(fd, protoreflect.ValueOfMessage(sa))
				b.Set(fd, protoreflect.ValueOfMessage(sb))
			}
		default:
			switch r.IntN(3) {
			case 0:
				a.Set(fd, v)
			case 1:
				b.Set(fd, v)
			default:
				a.Set(fd, bogus(r, fd))
				b.Set(fd, v)
			}
		}
		return true
	})
	return a, b
}

// bogusEntry is a map value like v, for a later entry of its key to
// replace: a message with a bogus first field, or a bogus scalar.
func bogusEntry(r *rand.Rand, fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	if fd.Message() == nil {
		return bogus(r, fd)
	}
	m := v.Message().New()
	f := m.Descriptor().Fields().Get(0)
	m.Set(f, bogus(r, f))
	return protoreflect.ValueOfMessage(m)
}

// bogus is a value of fd's kind, maybe invalid (a port above 65535, an
// undefined enum value, an address of 3 bytes), for a later one to replace.
func bogus(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(10) - 2))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(r.Uint32())
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(r.Uint64())
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(r.Int64())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64([]float64{math.NaN(), math.Inf(1), -1, r.NormFloat64()}[r.IntN(4)])
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("bogus")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(make([]byte, r.IntN(20)))
	}
	panic("no bogus value for " + fd.Kind().String())
}

func scalarField(fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	num := fd.Number()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), uint64(int64(v.Enum())))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v.Uint())
	case protoreflect.Int64Kind:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), uint64(v.Int()))
	case protoreflect.DoubleKind:
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), math.Float64bits(v.Float()))
	case protoreflect.StringKind:
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v.String())
	case protoreflect.BytesKind:
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v.Bytes())
	}
	panic("no encoding for " + fd.Kind().String())
}

func messageField(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

// TestDecodeResponseCases: hand-made wire for each rule decodeResponse
// mirrors.
func TestDecodeResponseCases(t *testing.T) {
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(nil, num, protowire.VarintType), v)
	}
	msg := func(num protowire.Number, parts ...[]byte) []byte { return messageField(num, slices.Concat(parts...)) }
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(tag(nil, num, protowire.BytesType), s)
	}
	port := func(p uint64) []byte { return msg(8, str(1, "s"), msg(4, varint(2, p))) } // a service with one port
	authz := func(parts ...[]byte) []byte { return msg(6, str(1, "u"), msg(10, parts...)) }
	peer := func(parts ...[]byte) []byte { return msg(10, msg(4, msg(2, parts...))) } // a policy with one rule with one peer
	// a service with one route, and one whose route has a retry policy
	route := func(parts ...[]byte) []byte { return msg(8, str(1, "s"), msg(7, parts...)) }
	retry := func(parts ...[]byte) []byte { return route(str(1, "ns/r"), msg(9, parts...)) }
	// a service with one occurrence of traffic, or several
	traffic := func(parts ...[]byte) []byte { return msg(8, str(1, "s"), msg(8, parts...)) }
	traffics := func(occs ...[]byte) []byte {
		var b []byte
		for _, o := range occs {
			b = append(b, messageField(8, o)...)
		}
		return msg(8, str(1, "s"), b)
	}
	dbl := func(num protowire.Number, v float64) []byte {
		return protowire.AppendFixed64(tag(nil, num, protowire.Fixed64Type), math.Float64bits(v))
	}
	lb := func(alg uint64) []byte { return msg(2, varint(1, alg)) }
	rate := func(v float64) []byte { return msg(8, msg(1, dbl(1, v))) }      // RateLimit.per_endpoint.rate
	tool := func(parts ...[]byte) []byte { return msg(8, msg(3, parts...)) } // one RateLimit.tools entry

	for name, tc := range map[string]struct {
		data []byte
		ok   bool
	}{
		"port 80":                       {port(80), true},
		"port 65536":                    {port(65536), false},
		"port 1<<32 + 80 (truncated)":   {port(1<<32 + 80), true},
		"port 70000 then 80":            {msg(8, msg(4, varint(2, 70000), varint(2, 80))), true},
		"protocol 9 then 1":             {msg(8, msg(4, varint(4, 9), varint(4, 1))), true},
		"protocol 1<<32 + 1":            {msg(8, msg(4, varint(4, 1<<32+1))), true},
		"protocol -1":                   {msg(8, msg(4, varint(4, 1<<64-1))), false},
		"two workloads do not merge":    {slices.Concat(authz(varint(3, 9), str(2, "a/b")), msg(6, msg(10, varint(3, 1)))), false},
		"authz split in one workload":   {msg(6, str(1, "u"), msg(10, varint(3, 9), varint(5, 80)), str(2, "n"), msg(10, varint(3, 1))), true},
		"authz mode 9 at last":          {msg(6, msg(10, varint(3, 1)), msg(10, varint(3, 9))), false},
		"empty authz":                   {authz(), true},
		"probe ports packed":            {authz(msg(5, []byte{80, 0x90, 0x46})), true},
		"probe ports packed, truncated": {authz(msg(5, []byte{80, 0x90})), false},
		"probe ports mixed":             {authz(varint(5, 1), msg(5, []byte{2, 3}), varint(5, 4)), true},
		"probe port 65536 packed":       {authz(msg(5, protowire.AppendVarint(nil, 65536))), false},
		"nested wrong wire type":        {msg(6, str(1, "u"), protowire.AppendFixed32(tag(nil, 3, protowire.Fixed32Type), 7)), true},
		"nested group":                  {msg(6, tag(tag(nil, 3, protowire.StartGroupType), 3, protowire.EndGroupType)), true},
		"top-level wrong wire type":     {str(1, "n1"), false},
		"top-level group":               {tag(tag(nil, 6, protowire.StartGroupType), 6, protowire.EndGroupType), false},
		"unknown group":                 {tag(tag(nil, 66, protowire.StartGroupType), 66, protowire.EndGroupType), true},
		"unmatched end group":           {tag(nil, 66, protowire.EndGroupType), false},
		"nested end group":              {msg(6, tag(nil, 3, protowire.EndGroupType)), false},
		"wire type 6":                   {tag(nil, 66, 6), false},
		"field number 0":                {varint(0, 1), false},
		"field number 1<<29":            {protowire.AppendVarint(protowire.AppendVarint(nil, 1<<29<<3), 1), false},
		"field number 1<<29-1":          {varint(1<<29-1, 1), true},
		"bool 2":                        {varint(2, 2), true},
		"invalid UTF-8":                 {str(4, "\xff"), false},
		"invalid UTF-8 then valid":      {slices.Concat(str(4, "\xff"), str(4, "td")), false},
		"invalid UTF-8 in a label":      {msg(6, msg(7, str(1, "k"), str(2, "v\xc3"))), false},
		"invalid UTF-8, unknown field":  {msg(6, str(77, "\xff")), true},
		"bundle, then empty":            {slices.Concat(str(5, "pem"), str(5, "")), true},
		"label key twice":               {msg(6, msg(7, str(1, "k"), str(2, "a")), msg(7, str(1, "k"), str(2, "b"))), true},
		"prefix merged":                 {peer(msg(4, msg(1, str(1, "\x0a\x00\x00"), varint(2, 8)), msg(1, str(1, "\x0a\x00\x00\x00")))), true},
		"prefix bits only":              {peer(msg(4, msg(1, varint(2, 8)))), false},
		"prefix /33":                    {peer(msg(4, msg(1, str(1, "\x0a\x00\x00\x00"), varint(2, 33)))), false},
		"prefix /33 truncated to /1":    {peer(msg(4, msg(1, str(1, "\x0a\x00\x00\x00"), varint(2, 1<<32+1)))), true},
		"empty namespace set":           {peer(msg(2)), true},
		"identity sets merged":          {peer(msg(1, msg(1, str(1, "td"))), msg(1, msg(1, str(2, "ns")))), true},
		"string sets merged":            {peer(msg(3, str(1, "a")), msg(3, str(1, "b"), str(1, "a"))), true},
		"rule index -1":                 {msg(10, msg(4, varint(1, 1<<64-1))), true},
		"truncated":                     {[]byte{0x0a, 0xff}, false},
		"truncated varint":              {[]byte{0x08, 0xff}, false},
		"overlong varint":               {append([]byte{0x08}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), false},
		"address of 5 bytes":            {msg(6, str(6, "12345")), false},
		"empty address":                 {msg(6, str(6, "")), true},

		// Service.routes: each occurrence is one route; a route's own
		// fields merge.
		"empty route":                     {route(), true},
		"two routes, endpoints between":   {msg(8, msg(7, str(1, "a")), msg(5, varint(3, 1)), msg(7, str(1, "b"), varint(4, 80))), true},
		"routes of two services":          {slices.Concat(route(str(1, "a")), route(str(1, "b")), msg(8, str(1, "none"))), true},
		"route port 70000":                {route(varint(4, 70000)), false},
		"route port 70000 then 80":        {route(varint(4, 70000), varint(4, 80)), true},
		"route port 1<<32 + 80":           {route(varint(4, 1<<32+80)), true},
		"route rule -1":                   {route(varint(3, 1<<64-1)), true},
		"route timeout -1":                {route(varint(7, 1<<64-1)), false},
		"route timeout -1 then 5":         {route(varint(7, 1<<64-1), varint(7, 5)), true},
		"route backend timeout -1":        {route(varint(8, 1<<64-1)), false},
		"route match split":               {route(msg(5, varint(1, 2), msg(4, str(1, "h"))), msg(5, str(2, "/a"), msg(4, str(1, "i"), varint(3, 1)))), true},
		"route path type 9":               {route(msg(5, varint(1, 9))), false},
		"route path type 9 then 3":        {route(msg(5, varint(1, 9)), msg(5, varint(1, 3))), true},
		"route path type 1<<32 + 3":       {route(msg(5, varint(1, 1<<32+3))), true},
		"route path type -1":              {route(msg(5, varint(1, 1<<64-1))), false},
		"route backend port 65536":        {route(msg(6, str(1, "ns/b"), varint(2, 65536))), false},
		"route backend weight 1<<32 + 1":  {route(msg(6, str(1, "ns/b"), varint(2, 80), varint(3, 1<<32+1))), true},
		"empty retry":                     {retry(), true},
		"retry split":                     {route(msg(9, varint(1, 2)), msg(9, varint(2, 503), varint(3, 1000))), true},
		"retry backoff -1":                {retry(varint(3, 1<<64-1)), false},
		"retry attempts 1<<32 + 2":        {retry(varint(1, 1<<32+2)), true},
		"retry codes packed":              {retry(msg(2, protowire.AppendVarint(protowire.AppendVarint(nil, 502), 503))), true},
		"retry codes mixed":               {retry(varint(2, 500), msg(2, protowire.AppendVarint(nil, 502)), varint(2, 504)), true},
		"retry code 1000":                 {retry(varint(2, 1000)), false},
		"retry code 1000 packed":          {retry(msg(2, protowire.AppendVarint(nil, 1000))), false},
		"retry code 1<<32 + 503":          {retry(varint(2, 1<<32+503)), true},
		"retry codes packed, truncated":   {retry(msg(2, []byte{0xf7})), false},
		"invalid UTF-8 in a route":        {route(str(1, "ns/\xff")), false},
		"invalid UTF-8 in a header match": {route(msg(5, msg(4, str(2, "\xc3")))), false},
		"invalid UTF-8, unknown in route": {route(str(77, "\xff")), true},
		"route of another wire type":      {msg(8, str(1, "s"), varint(7, 1)), true},
		"route field of another type":     {route(protowire.AppendFixed32(tag(nil, 4, protowire.Fixed32Type), 7)), true},
		"route truncated":                 {msg(8, messageField(7, []byte{0x0a, 0x05, 'a'})), false},
		"route with a group":              {route(tag(tag(nil, 50, protowire.StartGroupType), 50, protowire.EndGroupType)), true},
		"route with an end group":         {route(tag(nil, 50, protowire.EndGroupType)), false},
		"route field number 0":            {route(varint(0, 1)), false},

		// Service.traffic: occurrences merge, as do their parts; values
		// are checked once merged.
		"empty traffic":                       {traffic(), true},
		"traffic merged":                      {traffics(slices.Concat(str(1, "ns/a"), msg(4, varint(1, 5))), slices.Concat(msg(4, varint(2, 7)), lb(2))), true},
		"traffic around endpoints and routes": {msg(8, str(1, "s"), msg(8, str(1, "a")), msg(5, varint(3, 1)), msg(7, str(1, "r")), msg(8, msg(3)), msg(5, str(2, "\x0a\x00\x00\x01")), msg(8, str(1, "b"))), true},
		"traffic of two services":             {slices.Concat(traffic(str(1, "a")), msg(8, str(1, "t")), traffic(lb(3))), true},
		"traffic name twice":                  {traffics(str(1, "a"), str(1, "b")), true},
		"lb algorithm 9":                      {traffic(lb(9)), false},
		"lb algorithm 9 then 1":               {traffics(lb(9), lb(1)), true},
		"lb algorithm 9 then 1, one occ.":     {traffic(lb(9), lb(1)), true},
		"lb algorithm 1 then 9":               {traffics(lb(1), lb(9)), false},
		"lb algorithm 1<<32 + 4":              {traffic(lb(1<<32 + 4)), true},
		"lb algorithm -1":                     {traffic(lb(1<<64 - 1)), false},
		"lb hash merged":                      {traffics(msg(2, msg(2, str(1, "h"))), msg(2, msg(2, varint(3, 1)), varint(1, 4))), true},
		"affinity key absent":                 {traffic(msg(3)), true},
		"connect -1":                          {traffic(msg(4, varint(1, 1<<64-1))), false},
		"connect -1 then 5":                   {traffics(msg(4, varint(1, 1<<64-1)), msg(4, varint(1, 5))), true},
		"idle -1 after 5":                     {traffics(msg(4, varint(3, 5)), msg(4, varint(3, 1<<64-1))), false},
		"base ejection -1":                    {traffic(msg(7, varint(2, 1<<64-1))), false},
		"max ejected percent 1<<32 + 50":      {traffic(msg(7, varint(4, 1<<32+50))), true},
		"burst 1<<32 + 3":                     {traffic(msg(8, msg(2, varint(2, 1<<32+3)))), true},
		"rate 2.5":                            {traffic(rate(2.5)), true},
		"rate NaN":                            {traffic(rate(math.NaN())), false},
		"rate +Inf":                           {traffic(rate(math.Inf(1))), false},
		"rate -1":                             {traffic(rate(-1)), false},
		"rate -0":                             {traffic(rate(math.Copysign(0, -1))), true},
		"rate NaN then 2":                     {traffics(rate(math.NaN()), rate(2)), true},
		"rate 2 then NaN":                     {traffics(rate(2), rate(math.NaN())), false},
		"ratio NaN":                           {traffic(msg(5, dbl(1, math.NaN()))), false},
		"ratio as a varint":                   {traffic(msg(5, varint(1, 5))), true},
		"rate as fixed32":                     {traffic(msg(8, msg(1, protowire.AppendFixed32(tag(nil, 1, protowire.Fixed32Type), 7)))), true},
		"rate truncated":                      {traffic(msg(8, msg(1, tag(nil, 1, protowire.Fixed64Type), []byte{1, 2, 3}))), false},
		"tool":                                {traffic(tool(str(1, "search"), msg(2, dbl(1, 1), varint(2, 3)))), true},
		"tool twice keeps the last":           {traffic(tool(str(1, "t"), msg(2, dbl(1, math.NaN()))), tool(str(1, "t"), msg(2, varint(2, 4)))), true},
		"tool twice, NaN last":                {traffic(tool(str(1, "t"), msg(2, varint(2, 4))), tool(str(1, "t"), msg(2, dbl(1, math.NaN())))), false},
		"tool value before key":               {traffic(tool(msg(2, varint(2, 4)), str(1, "t"))), true},
		"tool without a bucket":               {traffic(tool(str(1, "t"))), true},
		"tool without a name":                 {traffic(tool(msg(2, varint(2, 1)))), true},
		"tools in two occurrences":            {traffics(tool(str(1, "a")), tool(str(1, "b"), msg(2, dbl(1, 3)))), true},
		"tool name invalid UTF-8":             {traffic(tool(str(1, "\xff"))), false},
		"tool bucket rate NaN":                {traffic(tool(str(1, "t"), msg(2, dbl(1, math.NaN())))), false},
		"tool entry truncated":                {traffic(msg(8, messageField(3, []byte{0x0a, 0x05, 't'}))), false},
		"invalid UTF-8 in traffic":            {traffic(str(1, "ns/\xff")), false},
		"invalid UTF-8, unknown in traffic":   {traffic(str(77, "\xff")), true},
		"traffic of another wire type":        {msg(8, str(1, "s"), varint(8, 1)), true},
		"traffic field of another type":       {traffic(protowire.AppendFixed32(tag(nil, 2, protowire.Fixed32Type), 7)), true},
		"traffic truncated":                   {msg(8, str(1, "s"), messageField(8, []byte{0x0a, 0x05, 'a'})), false},
		// Concatenated, the two would be name "\x08\x01"; protobuf-go
		// fails on the first on its own.
		"traffic truncated, then more":    {msg(8, str(1, "s"), messageField(8, []byte{0x0a, 0x02}), messageField(8, []byte{0x08, 0x01})), false},
		"traffic truncated after a valid": {msg(8, str(1, "s"), messageField(8, []byte{0x0a, 0x01, 'a'}), messageField(8, []byte{0x0a})), false},
		"traffic with a group":            {traffic(tag(tag(nil, 50, protowire.StartGroupType), 50, protowire.EndGroupType)), true},
		"traffic with an end group":       {traffic(tag(nil, 50, protowire.EndGroupType)), false},
		"traffic field number 0":          {traffic(varint(0, 1)), false},
	} {
		t.Run(name, func(t *testing.T) {
			sameDecode(t, tc.data)
			if _, err := decodeResponse(tc.data); (err == nil) != tc.ok {
				t.Errorf("decodeResponse error = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestDecodeTrafficMerged: occurrences of Service.traffic merge, field by
// field and part by part, whether the fields of a service come between
// them or not (the reference path could be wrong alike: this is the
// value protobuf merging gives).
func TestDecodeTrafficMerged(t *testing.T) {
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(num, protowire.VarintType), v)
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(tag(num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, parts ...[]byte) []byte { return messageField(num, slices.Concat(parts...)) }
	rate := func(v float64) []byte {
		return protowire.AppendFixed64(tag(1, protowire.Fixed64Type), math.Float64bits(v))
	}
	first := msg(8, str(1, "ns/a"), msg(4, varint(1, 5)), msg(2, varint(1, 4)), msg(8, msg(3, str(1, "x"), msg(2, varint(2, 1)))))
	second := msg(8, msg(4, varint(2, 7)), msg(2, msg(2, str(1, "h")), varint(1, 2)), msg(8, msg(1, rate(3)), msg(3, str(1, "y"))), str(1, "ns/b"))
	want := &meshconfig.TrafficPolicy{
		Name:         "ns/b",
		LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBRoundRobin, Hash: &meshconfig.HashKey{Header: "h"}},
		Timeouts:     &meshconfig.Timeouts{Connect: 5, FirstByte: 7},
		RateLimit:    &meshconfig.RateLimit{PerEndpoint: &meshconfig.Bucket{Rate: 3}, Tools: map[string]meshconfig.Bucket{"x": {Burst: 1}, "y": {}}},
	}
	for name, data := range map[string][]byte{
		"adjacent":       msg(8, str(1, "s"), first, second),
		"interleaved":    msg(8, first, str(1, "s"), msg(5, varint(3, 1), str(2, "\x0a\x00\x00\x01")), msg(7, str(1, "r")), msg(5, varint(3, 0)), second),
		"three, one nil": msg(8, first, msg(8), str(1, "s"), second),
	} {
		sameDecode(t, data)
		got, err := decodeResponse(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := got.Services[0]
		if s.Name != "s" || !reflect.DeepEqual(s.Traffic, want) {
			t.Errorf("%s: traffic decoded as (-want +got):\n%s", name, cmp.Diff(want, s.Traffic))
		}
		if name == "interleaved" && (len(s.Endpoints) != 2 || len(s.Routes) != 1) {
			t.Errorf("%s: endpoints %v, routes %v", name, s.Endpoints, s.Routes)
		}
	}
}

// TestDecodeResponseCopies: the decoded value shares no memory with the
// wire (gRPC reuses its buffer), and strings that repeat are interned.
func TestDecodeResponseCopies(t *testing.T) {
	in := representative()
	data := mustMarshal(t, in)
	out, err := decodeResponse(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 0xee
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("the decoded value changed with the wire buffer (-want +got):\n%s", cmp.Diff(in, &out, cmpOpts...))
	}
	web := out.Workloads[0].Labels["app"]
	if sa := out.Services[0].Name; web != sa || unsafe.StringData(web) != unsafe.StringData(sa) {
		t.Errorf("label value %q and service name %q are not one string", web, sa)
	}
}

// TestUnmarshalResponseError: on an error, the codec leaves the message
// as it was.
func TestUnmarshalResponseError(t *testing.T) {
	r := ConfigResponse{Version: 5}
	err := protoCodec{}.Unmarshal(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "n1"), &r)
	if !errors.Is(err, ErrInvalid) || r.Version != 5 {
		t.Errorf("Unmarshal = %v, message %+v", err, r)
	}
}

// FuzzDecodeResponse: for any bytes, decodeResponse and the generated path
// both fail, or both succeed with DeepEqual values; neither panics.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(mustMarshal(f, representative()))
	withRoutes := &ConfigResponse{Services: []meshconfig.Service{{Name: "web", Namespace: "shop", Routes: routes()}}}
	f.Add(mustMarshal(f, withRoutes))
	if m, err := responseToProto(withRoutes); err == nil {
		f.Add(scramble(rand.New(rand.NewPCG(1, 17)), m.ProtoReflect(), true))
	}
	withTraffic := &ConfigResponse{Services: []meshconfig.Service{
		{Name: "web", Namespace: "shop", Traffic: traffic(), Endpoints: []meshconfig.Endpoint{{Ready: true}}},
		{Name: "parts", Namespace: "shop", Traffic: emptyParts()},
	}}
	f.Add(mustMarshal(f, withTraffic))
	if m, err := responseToProto(withTraffic); err == nil {
		for seed := range uint64(3) { // occurrences of traffic and its parts split and interleaved
			f.Add(scramble(rand.New(rand.NewPCG(seed, 19)), m.ProtoReflect(), true))
		}
	}
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 17))
		resp := randResponse(r)
		f.Add(mustMarshal(f, resp))
		m, err := responseToProto(resp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(scramble(r, m.ProtoReflect(), true))
	}
	if b, err := proto.Marshal(&pb.ConfigRequest{Node: "n1", Component: ComponentAgentd, AckVersion: 3}); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameDecode(t, data)
	})
}
