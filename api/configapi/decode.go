package configapi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmesh/agentmesh/api/configapi/proto/agentmesh/v1"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// A hand-written decoder of the ConfigResponse wire, straight into the Go
// types. A node decodes full views of the whole cluster, and protobuf-go's
// generic decoder (allocate every generated message and string, then
// convert) was a large part of its CPU.
//
// It gives what proto.Unmarshal into pb.ConfigResponse followed by
// responseFromProto gives (decodeProto's checks included): the same value,
// canonical forms included, or an error where that path has one. That is:
//   - unknown fields are skipped, and so is a known field of another wire
//     type below the top level (protobuf-go keeps it as an unknown field);
//     at the top level it is an error (decodeProto);
//   - a scalar field given twice keeps its last value, a message field given
//     twice is the merge of both, a repeated field appends; probe_ports come
//     packed or not;
//   - values are checked once a message is complete, as the conversion
//     checks the merged message: a port given as 70000 and then as 80 is 80;
//   - an enum is the int32 of its varint, and a uint32 field truncates its
//     varint too, as protobuf-go does;
//   - every string must be UTF-8 (proto3; protobuf-go checks it too).
//
// FuzzDecodeResponse checks this against the generated path.
//
// Strings are copied out of the wire (gRPC reuses its buffer); those that
// repeat across workloads (namespaces, nodes, label keys and values, service
// names...) are interned per decode, each distinct value allocated once.
// Address lists, service ports, endpoints and targets are cut from slabs.
//
// Service.routes are few and small next to endpoints: each occurrence is
// one Route, unmarshalled on its own by protobuf-go (pb.Route) and
// converted by routeFromProto, as the generated path does element by
// element; a Service without routes costs nothing more.
//
// Service.traffic, a singular message field, is rarer still: the bytes of
// each of its occurrences are kept while the Service is decoded, and once
// it is complete they are unmarshalled by protobuf-go into one
// pb.TrafficPolicy, each within its own bounds and merged into what the
// earlier ones gave (proto.UnmarshalOptions.Merge: what protobuf-go does
// with a message field given twice), then converted by trafficFromProto.
// Unmarshalling the occurrences concatenated would merge valid ones
// alike, but would let a truncated occurrence run on into the next one's
// bytes where protobuf-go fails. A Service without traffic costs nothing
// more.

// Wire types, for the tags messages switch on (number<<3 | type).
const (
	wireVarint = uint64(protowire.VarintType)
	wireBytes  = uint64(protowire.BytesType)
)

// errInvalidUTF8: protobuf-go rejects a proto3 string that is not UTF-8.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// field is one field of a message on the wire.
type field struct {
	num protowire.Number
	typ protowire.Type
	tag uint64 // num<<3 | typ, to switch on
	u   uint64 // value of a varint
	b   []byte // value of a length-delimited field: a string, bytes, a message or packed scalars
}

// wireReader iterates over the fields of a message: for r.next() { r.f }.
// Fields of the fixed and group wire types are consumed whole and left
// without value: no field of the schema has those types.
type wireReader struct {
	b   []byte
	f   field
	err error
}

func (r *wireReader) next() bool {
	b := r.b
	if len(b) == 0 {
		return false
	}
	// One-byte tags, varints and lengths are the common case: inline them.
	var tag uint64
	n := 1
	if b[0] < 0x80 {
		tag = uint64(b[0])
	} else if tag, n = protowire.ConsumeVarint(b); n < 0 {
		return r.fail(fmt.Errorf("field tag: %w", protowire.ParseError(n)))
	}
	// protowire.ConsumeTag would accept numbers up to MaxInt32; protobuf-go
	// rejects those above MaxValidNumber in a message.
	if num := tag >> 3; num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return r.fail(fmt.Errorf("invalid field number %d", num))
	}
	f := &r.f
	f.num, f.typ, f.tag = protowire.Number(tag>>3), protowire.Type(tag&7), tag
	b = b[n:]
	switch f.typ {
	case protowire.VarintType:
		if len(b) > 0 && b[0] < 0x80 {
			f.u, n = uint64(b[0]), 1
		} else {
			f.u, n = protowire.ConsumeVarint(b)
		}
	case protowire.BytesType:
		if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
			l := int(b[0]) + 1
			f.b, n = b[1:l:l], l
		} else {
			f.b, n = protowire.ConsumeBytes(b)
		}
	case protowire.EndGroupType:
		return r.fail(fmt.Errorf("field %d: end group with no start", f.num))
	default: // fixed32, fixed64, a group (skipped whole), or an invalid type
		n = protowire.ConsumeFieldValue(f.num, f.typ, b)
	}
	if n < 0 {
		return r.fail(fmt.Errorf("field %d: %w", f.num, protowire.ParseError(n)))
	}
	r.b = b[n:]
	return true
}

func (r *wireReader) fail(err error) bool {
	r.err, r.b = err, nil
	return false
}

// slab hands out short slices cut from larger allocations: one allocation
// for many address lists (ports, endpoints...) rather than one each. A
// chunk's unused tail is lost when the next one starts, so chunks grow
// from small (short messages) to at most maxSlab elements.
type slab[T any] struct {
	free []T
	next int // elements of the next chunk
}

const minSlab, maxSlab = 16, 4096

// copyOf returns a copy of s cut from the slab, nil if s is empty
// (canonical form).
func (s *slab[T]) copyOf(v []T) []T {
	n := len(v)
	if n == 0 {
		return nil
	}
	if len(s.free) < n {
		size := max(n, s.next, minSlab)
		s.free = make([]T, size)
		s.next = min(2*size, maxSlab)
	}
	out := s.free[:n:n]
	s.free = s.free[n:]
	copy(out, v)
	return out
}

// one returns a new zero element cut from the slab.
func (s *slab[T]) one() *T {
	if len(s.free) == 0 {
		size := max(s.next, minSlab)
		s.free = make([]T, size)
		s.next = min(2*size, maxSlab)
	}
	p := &s.free[0]
	s.free = s.free[1:]
	return p
}

type label struct{ key, value string }

type namedPort struct {
	name string
	port uint16
}

// wireDecoder holds what one decodeResponse call shares between messages:
// interned strings, slabs, and scratch slices reused from one message to
// the next (copied out exactly sized once the message is complete).
type wireDecoder struct {
	strs    map[string]string
	cache   *internCache // for large messages only
	addrs   slab[netip.Addr]
	ports   slab[meshconfig.ServicePort]
	eps     slab[meshconfig.Endpoint]
	targets slab[policy.Target]

	ips       []netip.Addr // of the workload or endpoint being decoded
	vips      []netip.Addr
	labels    []label
	named     []namedPort
	lastNamed []namedPort       // the ports of the last endpoint that had some
	lastPorts map[string]uint16 // and its map
	svcPorts  []meshconfig.ServicePort
	endpoints []meshconfig.Endpoint
	routes    [][]byte // the wire of each Service.routes occurrence
	traffic   [][]byte // and of each Service.traffic occurrence (they merge)
	// the Authz of the workload being decoded, gathered over every
	// occurrence of the field (they merge)
	tPolicies []policy.Policy
	tRefs     []string
	tProbe    []uint16
}

// maxIntern bounds the strings interned: longer ones are unlikely to
// repeat, and not worth hashing.
const maxIntern = 128

// internCache is a direct-mapped cache in front of the intern map, for
// large messages: most lookups hit it, at a fraction of a map lookup (the
// map hashes the whole string and probes; this loads two words).
type internCache [1 << internCacheBits]string

const internCacheBits = 12

// cacheSlot is a cheap hash of b (its length, first and last bytes) to a
// slot of internCache. Strings that collide go to the map.
func cacheSlot(b []byte) uint64 {
	n := len(b)
	var h uint64
	switch {
	case n >= 8:
		h = binary.LittleEndian.Uint64(b) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(b[n-8:]), 29)
	case n >= 4:
		h = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[n-4:]))<<32
	default:
		h = uint64(b[0]) | uint64(b[n/2])<<8 | uint64(b[n-1])<<16
	}
	h = (h ^ uint64(n)) * 0x9e3779b97f4a7c15
	return h >> (64 - internCacheBits)
}

// str copies a string field out of the wire.
func (d *wireDecoder) str(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	return string(b), nil
}

// intern is str for strings that repeat: the first occurrence of a value
// is copied, and later ones share it. A string found was checked as UTF-8
// when it was added, and has the same bytes.
func (d *wireDecoder) intern(b []byte) (string, error) {
	if len(b) == 0 || len(b) > maxIntern {
		return d.str(b)
	}
	var slot *string
	if d.cache != nil {
		slot = &d.cache[cacheSlot(b)]
		if *slot == string(b) {
			return *slot, nil
		}
	}
	s, ok := d.strs[string(b)] // no allocation for the lookup
	if !ok {
		if !utf8.Valid(b) {
			return "", errInvalidUTF8
		}
		if d.strs == nil {
			d.strs = make(map[string]string, 64)
		}
		s = string(b)
		d.strs[s] = s
	}
	if slot != nil {
		*slot = s
	}
	return s, nil
}

// decodeResponse decodes the wire of a ConfigResponse.
func decodeResponse(data []byte) (ConfigResponse, error) {
	// Count the top-level repeated fields to allocate them exactly.
	var nWorkloads, nServices, nPolicies, nRemovedW, nRemovedS int
	r := wireReader{b: data}
	for r.next() {
		if r.f.typ == protowire.BytesType {
			switch r.f.num {
			case 6:
				nWorkloads++
			case 7:
				nRemovedW++
			case 8:
				nServices++
			case 9:
				nRemovedS++
			case 10:
				nPolicies++
			}
		}
	}
	if r.err != nil {
		return ConfigResponse{}, r.err
	}

	var d wireDecoder
	if n := nWorkloads + nServices; n > 0 {
		d.strs = make(map[string]string, min(n, 1024))
		d.addrs.next = min(n, 1<<14)
		if n >= 256 {
			d.cache = new(internCache)
		}
	}
	var m ConfigResponse
	if nWorkloads > 0 {
		m.Workloads = make([]meshconfig.Workload, 0, nWorkloads)
	}
	if nServices > 0 {
		m.Services = make([]meshconfig.Service, 0, nServices)
	}
	if nPolicies > 0 {
		m.Policies = make([]policy.Policy, 0, nPolicies)
	}
	if nRemovedW > 0 {
		m.RemovedWorkloads = make([]string, 0, nRemovedW)
	}
	if nRemovedS > 0 {
		m.RemovedServices = make([]string, 0, nRemovedS)
	}
	var bundle []byte
	r = wireReader{b: data}
	for r.next() {
		f := &r.f
		var err error
		switch f.num {
		case 1:
			if f.typ == protowire.VarintType {
				m.Version = f.u
				continue
			}
		case 2:
			if f.typ == protowire.VarintType {
				m.Full = f.u != 0
				continue
			}
		case 3:
			if f.typ == protowire.VarintType {
				m.More = f.u != 0
				continue
			}
		case 4:
			if f.typ == protowire.BytesType {
				if m.TrustDomain, err = d.str(f.b); err != nil {
					return ConfigResponse{}, fmt.Errorf("trust domain: %w", err)
				}
				continue
			}
		case 5:
			if f.typ == protowire.BytesType {
				bundle = f.b // the last one counts: copied at the end
				continue
			}
		case 6:
			if f.typ == protowire.BytesType {
				i := len(m.Workloads)
				m.Workloads = append(m.Workloads, meshconfig.Workload{})
				w := &m.Workloads[i]
				if err := d.workload(f.b, w); err != nil {
					return ConfigResponse{}, fmt.Errorf("workload %d (%s): %w", i, w.UID, err)
				}
				continue
			}
		case 7:
			if f.typ == protowire.BytesType {
				s, err := d.str(f.b)
				if err != nil {
					return ConfigResponse{}, fmt.Errorf("removed workloads: %w", err)
				}
				m.RemovedWorkloads = append(m.RemovedWorkloads, s)
				continue
			}
		case 8:
			if f.typ == protowire.BytesType {
				i := len(m.Services)
				m.Services = append(m.Services, meshconfig.Service{})
				s := &m.Services[i]
				if err := d.service(f.b, s); err != nil {
					return ConfigResponse{}, fmt.Errorf("service %d (%s): %w", i, s.Key(), err)
				}
				continue
			}
		case 9:
			if f.typ == protowire.BytesType {
				s, err := d.str(f.b)
				if err != nil {
					return ConfigResponse{}, fmt.Errorf("removed services: %w", err)
				}
				m.RemovedServices = append(m.RemovedServices, s)
				continue
			}
		case 10:
			if f.typ == protowire.BytesType {
				p, err := d.policy(f.b)
				if err != nil {
					return ConfigResponse{}, fmt.Errorf("policies: %w", err)
				}
				m.Policies = append(m.Policies, p)
				continue
			}
		default:
			continue // unknown: a newer peer's
		}
		// A known field with another wire type: decodeProto refuses it, as it
		// tells most messages of another type apart.
		return ConfigResponse{}, invalid("field %d has wire type %d, not that of the schema", f.num, f.typ)
	}
	if r.err != nil {
		return ConfigResponse{}, r.err
	}
	if len(bundle) > 0 {
		m.TrustBundlePEM = bytes.Clone(bundle)
	}
	return m, nil
}

func (d *wireDecoder) workload(b []byte, w *meshconfig.Workload) error {
	d.ips, d.labels = d.ips[:0], d.labels[:0]
	d.tPolicies, d.tRefs, d.tProbe = d.tPolicies[:0], d.tRefs[:0], d.tProbe[:0]
	var t *policy.Target
	var mode, def int32 // t's enums, checked once every occurrence is merged
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			w.UID, err = d.str(f.b)
		case 2<<3 | wireBytes:
			w.Name, err = d.str(f.b)
		case 3<<3 | wireBytes:
			w.Namespace, err = d.intern(f.b)
		case 4<<3 | wireBytes:
			w.ServiceAccount, err = d.intern(f.b)
		case 5<<3 | wireBytes:
			w.Node, err = d.intern(f.b)
		case 6<<3 | wireBytes:
			var a netip.Addr
			if a, err = addrFromBytes(f.b); err != nil {
				return fmt.Errorf("ips: address %d: %w", len(d.ips), err)
			}
			d.ips = append(d.ips, a)
		case 7<<3 | wireBytes:
			var l label
			if l, err = d.label(f.b); err != nil {
				return fmt.Errorf("labels: %w", err)
			}
			d.labels = append(d.labels, l)
		case 8<<3 | wireVarint:
			w.Enrolled = f.u != 0
		case 9<<3 | wireBytes:
			w.Netns, err = d.str(f.b)
		case 11<<3 | wireBytes:
			w.WorkloadName, err = d.intern(f.b)
		case 10<<3 | wireBytes:
			if t == nil {
				t = d.targets.one()
			}
			if err := d.target(f.b, &mode, &def); err != nil {
				return fmt.Errorf("authz: %w", err)
			}
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", f.num, err)
		}
	}
	if r.err != nil {
		return r.err
	}
	w.IPs = d.addrs.copyOf(d.ips)
	if len(d.labels) > 0 {
		w.Labels = make(map[string]string, len(d.labels))
		for _, l := range d.labels {
			w.Labels[l.key] = l.value // a key given twice keeps its last value
		}
	}
	if t != nil {
		var err error
		if t.MTLSMode, err = mtlsModeFromProto(pb.MtlsMode(mode)); err != nil {
			return fmt.Errorf("authz: %w", err)
		}
		if t.Default, err = actionFromProto(pb.Action(def)); err != nil {
			return fmt.Errorf("authz: default: %w", err)
		}
		t.Policies = exact(d.tPolicies)
		t.PolicyRefs = exact(d.tRefs)
		t.ProbePorts = exact(d.tProbe)
		w.Authz = t
	}
	return nil
}

// exact copies s into a slice of its length, nil if empty.
func exact[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return append(make(S, 0, len(s)), s...)
}

func (d *wireDecoder) label(b []byte) (label, error) {
	var l label
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			l.key, err = d.intern(f.b)
		case 2<<3 | wireBytes:
			l.value, err = d.intern(f.b)
		}
		if err != nil {
			return label{}, err
		}
	}
	return l, r.err
}

// target decodes one occurrence of Workload.authz into d.tPolicies, d.tRefs,
// d.tProbe, *mode and *def.
func (d *wireDecoder) target(b []byte, mode, def *int32) error {
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireBytes:
			p, err := d.policy(f.b)
			if err != nil {
				return err
			}
			d.tPolicies = append(d.tPolicies, p)
		case 2<<3 | wireBytes:
			s, err := d.intern(f.b)
			if err != nil {
				return fmt.Errorf("policy refs: %w", err)
			}
			d.tRefs = append(d.tRefs, s)
		case 3<<3 | wireVarint:
			*mode = int32(f.u)
		case 4<<3 | wireVarint:
			*def = int32(f.u)
		case 5<<3 | wireVarint:
			if err := d.probePort(f.u); err != nil {
				return err
			}
		case 5<<3 | wireBytes: // packed
			for p := f.b; len(p) > 0; {
				v, n := protowire.ConsumeVarint(p)
				if n < 0 {
					return fmt.Errorf("probe ports: %w", protowire.ParseError(n))
				}
				if err := d.probePort(v); err != nil {
					return err
				}
				p = p[n:]
			}
		}
	}
	return r.err
}

func (d *wireDecoder) probePort(v uint64) error {
	p, err := portFromProto(uint32(v))
	if err != nil {
		return fmt.Errorf("probe port: %w", err)
	}
	d.tProbe = append(d.tProbe, p)
	return nil
}

func (d *wireDecoder) service(b []byte, s *meshconfig.Service) error {
	d.vips, d.svcPorts, d.endpoints = d.vips[:0], d.svcPorts[:0], d.endpoints[:0]
	d.routes, d.traffic = d.routes[:0], d.traffic[:0]
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			s.Name, err = d.intern(f.b)
		case 2<<3 | wireBytes:
			s.Namespace, err = d.intern(f.b)
		case 3<<3 | wireBytes:
			var a netip.Addr
			if a, err = addrFromBytes(f.b); err != nil {
				return fmt.Errorf("vips: address %d: %w", len(d.vips), err)
			}
			d.vips = append(d.vips, a)
		case 4<<3 | wireBytes:
			var p meshconfig.ServicePort
			if err := d.servicePort(f.b, &p); err != nil {
				return fmt.Errorf("port %d: %w", len(d.svcPorts), err)
			}
			d.svcPorts = append(d.svcPorts, p)
		case 5<<3 | wireBytes:
			var ep meshconfig.Endpoint
			if err := d.endpoint(f.b, &ep); err != nil {
				return fmt.Errorf("endpoint %d: %w", len(d.endpoints), err)
			}
			d.endpoints = append(d.endpoints, ep)
		case 6<<3 | wireBytes:
			s.ExternalName, err = d.str(f.b)
		case 7<<3 | wireBytes:
			d.routes = append(d.routes, f.b) // decoded once the service is complete
		case 8<<3 | wireBytes:
			d.traffic = append(d.traffic, f.b) // merged once the service is complete
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", f.num, err)
		}
	}
	if r.err != nil {
		return r.err
	}
	s.VIPs = d.addrs.copyOf(d.vips)
	s.Ports = d.ports.copyOf(d.svcPorts)
	s.Endpoints = d.eps.copyOf(d.endpoints)
	if len(d.routes) > 0 {
		if err := d.serviceRoutes(s); err != nil {
			return err
		}
	}
	if len(d.traffic) > 0 {
		return d.serviceTraffic(s)
	}
	return nil
}

// serviceRoutes decodes the routes of s gathered in d.routes: each
// occurrence of the field is one Route (a repeated message field appends).
// protobuf-go copies the strings it decodes out of the wire.
func (d *wireDecoder) serviceRoutes(s *meshconfig.Service) error {
	s.Routes = make([]meshconfig.Route, len(d.routes))
	for i, b := range d.routes {
		var m pb.Route
		if err := proto.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
		if err := routeFromProto(&m, &s.Routes[i]); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
	}
	return nil
}

// serviceTraffic decodes the traffic policy of s from the occurrences of
// the field gathered in d.traffic: each is unmarshalled on its own and
// merged into the one message, as protobuf-go merges a message field
// given twice.
func (d *wireDecoder) serviceTraffic(s *meshconfig.Service) error {
	var m pb.TrafficPolicy
	merge := proto.UnmarshalOptions{Merge: true}
	for _, b := range d.traffic {
		if err := merge.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("traffic policy: %w", err)
		}
	}
	tp, err := trafficFromProto(&m)
	if err != nil {
		return fmt.Errorf("traffic policy %s: %w", m.GetName(), err)
	}
	s.Traffic = tp
	return nil
}

func (d *wireDecoder) servicePort(b []byte, p *meshconfig.ServicePort) error {
	var port, target uint32
	var protocol int32
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			p.Name, err = d.intern(f.b)
		case 2<<3 | wireVarint:
			port = uint32(f.u)
		case 3<<3 | wireVarint:
			target = uint32(f.u)
		case 4<<3 | wireVarint:
			protocol = int32(f.u)
		case 5<<3 | wireBytes:
			p.AppProtocol, err = d.intern(f.b)
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", f.num, err)
		}
	}
	if r.err != nil {
		return r.err
	}
	var err error
	if p.Port, err = portFromProto(port); err != nil {
		return err
	}
	if p.TargetPort, err = portFromProto(target); err != nil {
		return fmt.Errorf("target port: %w", err)
	}
	p.Protocol, err = protocolFromProto(pb.Protocol(protocol))
	return err
}

func (d *wireDecoder) endpoint(b []byte, ep *meshconfig.Endpoint) error {
	d.ips, d.named = d.ips[:0], d.named[:0]
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			ep.WorkloadUID, err = d.str(f.b)
		case 2<<3 | wireBytes:
			var a netip.Addr
			if a, err = addrFromBytes(f.b); err != nil {
				return fmt.Errorf("ips: address %d: %w", len(d.ips), err)
			}
			d.ips = append(d.ips, a)
		case 3<<3 | wireVarint:
			ep.Ready = f.u != 0
		case 4<<3 | wireBytes:
			var np namedPort
			if np, err = d.namedPort(f.b); err != nil {
				return fmt.Errorf("ports: %w", err)
			}
			d.named = append(d.named, np)
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", f.num, err)
		}
	}
	if r.err != nil {
		return r.err
	}
	ep.IPs = d.addrs.copyOf(d.ips)
	if len(d.named) > 0 {
		// The endpoints of a slice name the same ports: consecutive
		// endpoints with the same list share one map (read-only, like
		// every decoded value; the controller shares it the same way).
		if d.lastPorts == nil || !slices.Equal(d.named, d.lastNamed) {
			d.lastPorts = make(map[string]uint16, len(d.named))
			for _, np := range d.named {
				d.lastPorts[np.name] = np.port
			}
			d.lastNamed = append(d.lastNamed[:0], d.named...)
		}
		ep.Ports = d.lastPorts
	}
	return nil
}

func (d *wireDecoder) namedPort(b []byte) (namedPort, error) {
	var np namedPort
	var port uint32
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireBytes:
			var err error
			if np.name, err = d.intern(f.b); err != nil {
				return namedPort{}, err
			}
		case 2<<3 | wireVarint:
			port = uint32(f.u)
		}
	}
	if r.err != nil {
		return namedPort{}, r.err
	}
	var err error
	if np.port, err = portFromProto(port); err != nil {
		return namedPort{}, fmt.Errorf("port %q: %w", np.name, err)
	}
	return np, nil
}

// The policy part is small (a few dozen policies per node) and allocates as
// it goes.

func (d *wireDecoder) policy(b []byte) (policy.Policy, error) {
	var p policy.Policy
	var action int32
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			p.Namespace, err = d.intern(f.b)
		case 2<<3 | wireBytes:
			p.Name, err = d.intern(f.b)
		case 3<<3 | wireVarint:
			action = int32(f.u)
		case 4<<3 | wireBytes:
			var rule policy.Rule
			if err := d.rule(f.b, &rule); err != nil {
				return policy.Policy{}, fmt.Errorf("policy %s: rule %d: %w", p.Key(), len(p.Rules), err)
			}
			p.Rules = append(p.Rules, rule)
		}
		if err != nil {
			return policy.Policy{}, fmt.Errorf("policy %s: field %d: %w", p.Key(), f.num, err)
		}
	}
	if r.err != nil {
		return policy.Policy{}, fmt.Errorf("policy %s: %w", p.Key(), r.err)
	}
	var err error
	if p.Action, err = actionFromProto(pb.Action(action)); err != nil {
		return policy.Policy{}, fmt.Errorf("policy %s: %w", p.Key(), err)
	}
	return p, nil
}

func (d *wireDecoder) rule(b []byte, rule *policy.Rule) error {
	var idx int64
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireVarint:
			idx = int64(f.u)
		case 2<<3 | wireBytes:
			var p policy.Peer
			if err := d.peer(f.b, &p); err != nil {
				return fmt.Errorf("from %d: %w", len(rule.From), err)
			}
			rule.From = append(rule.From, p)
		case 3<<3 | wireBytes:
			pr, err := portRange(f.b)
			if err != nil {
				return fmt.Errorf("ports %d: %w", len(rule.Ports), err)
			}
			rule.Ports = append(rule.Ports, pr)
		case 4<<3 | wireVarint:
			rule.L7 = f.u != 0
		case 5<<3 | wireBytes:
			// A message field seen twice is merged, as protobuf does.
			if rule.HTTP == nil {
				rule.HTTP = &policy.HTTPMatch{}
			}
			h := rule.HTTP
			r := wireReader{b: f.b}
			for r.next() {
				var err error
				switch r.f.tag {
				case 1<<3 | wireBytes:
					h.Methods, err = d.appendStr(h.Methods, r.f.b)
				case 2<<3 | wireBytes:
					h.Paths, err = d.appendStr(h.Paths, r.f.b)
				}
				if err != nil {
					return fmt.Errorf("http: %w", err)
				}
			}
			if r.err != nil {
				return fmt.Errorf("http: %w", r.err)
			}
		case 6<<3 | wireBytes:
			if rule.JSONRPC == nil {
				rule.JSONRPC = &policy.JSONRPCMatch{}
			}
			var err error
			if rule.JSONRPC.Methods, err = d.strList(rule.JSONRPC.Methods, f.b); err != nil {
				return fmt.Errorf("jsonrpc: %w", err)
			}
		case 7<<3 | wireBytes:
			if rule.MCP == nil {
				rule.MCP = &policy.MCPMatch{}
			}
			var err error
			if rule.MCP.Tools, err = d.strList(rule.MCP.Tools, f.b); err != nil {
				return fmt.Errorf("mcp: %w", err)
			}
		}
	}
	if r.err != nil {
		return r.err
	}
	if int64(int(idx)) != idx {
		return invalid("index %d out of range", idx)
	}
	rule.Index = int(idx)
	return nil
}

// appendStr appends the string b to vs.
func (d *wireDecoder) appendStr(vs []string, b []byte) ([]string, error) {
	s, err := d.str(b)
	if err != nil {
		return vs, err
	}
	return append(vs, s), nil
}

// strList appends the strings of a message whose field 1 is a repeated
// string to out.
func (d *wireDecoder) strList(out []string, b []byte) ([]string, error) {
	r := wireReader{b: b}
	for r.next() {
		if r.f.tag == 1<<3|wireBytes {
			var err error
			if out, err = d.appendStr(out, r.f.b); err != nil {
				return nil, err
			}
		}
	}
	return out, r.err
}

func portRange(b []byte) (policy.PortRange, error) {
	var from, to uint32
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireVarint:
			from = uint32(f.u)
		case 2<<3 | wireVarint:
			to = uint32(f.u)
		}
	}
	if r.err != nil {
		return policy.PortRange{}, r.err
	}
	var pr policy.PortRange
	var err error
	if pr.From, err = portFromProto(from); err != nil {
		return policy.PortRange{}, err
	}
	if pr.To, err = portFromProto(to); err != nil {
		return policy.PortRange{}, err
	}
	return pr, nil
}

func (d *wireDecoder) peer(b []byte, p *policy.Peer) error {
	// A set given twice is the merge of both; a set given at all, even
	// empty, constrains.
	var ids []spiffe.ID
	var namespaces, workloads []string
	var hasIDs, hasNamespaces, hasWorkloads bool
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			hasIDs = true
			if ids, err = d.identitySet(f.b, ids); err != nil {
				return fmt.Errorf("identities: %w", err)
			}
		case 2<<3 | wireBytes:
			hasNamespaces = true
			if namespaces, err = d.stringSet(f.b, namespaces); err != nil {
				return fmt.Errorf("namespaces: %w", err)
			}
		case 3<<3 | wireBytes:
			hasWorkloads = true
			if workloads, err = d.stringSet(f.b, workloads); err != nil {
				return fmt.Errorf("workloads: %w", err)
			}
		case 4<<3 | wireBytes:
			var blk policy.IPBlock
			if err := d.ipBlock(f.b, &blk); err != nil {
				return fmt.Errorf("ip block %d: %w", len(p.IPBlocks), err)
			}
			p.IPBlocks = append(p.IPBlocks, blk)
		}
	}
	if r.err != nil {
		return r.err
	}
	if hasIDs {
		p.Identities = policy.SetOf(ids...)
	}
	if hasNamespaces {
		p.Namespaces = policy.SetOf(namespaces...)
	}
	if hasWorkloads {
		p.Workloads = policy.SetOf(workloads...)
	}
	return nil
}

func (d *wireDecoder) stringSet(b []byte, vs []string) ([]string, error) {
	r := wireReader{b: b}
	for r.next() {
		if f := &r.f; f.tag == 1<<3|wireBytes {
			s, err := d.intern(f.b)
			if err != nil {
				return nil, err
			}
			vs = append(vs, s)
		}
	}
	return vs, r.err
}

func (d *wireDecoder) identitySet(b []byte, ids []spiffe.ID) ([]spiffe.ID, error) {
	r := wireReader{b: b}
	for r.next() {
		if f := &r.f; f.tag == 1<<3|wireBytes {
			id, err := d.spiffeID(f.b)
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
	}
	return ids, r.err
}

func (d *wireDecoder) spiffeID(b []byte) (spiffe.ID, error) {
	var id spiffe.ID
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		var err error
		switch f.tag {
		case 1<<3 | wireBytes:
			id.TrustDomain, err = d.intern(f.b)
		case 2<<3 | wireBytes:
			id.Namespace, err = d.intern(f.b)
		case 3<<3 | wireBytes:
			id.ServiceAccount, err = d.intern(f.b)
		}
		if err != nil {
			return spiffe.ID{}, err
		}
	}
	return id, r.err
}

func (d *wireDecoder) ipBlock(b []byte, blk *policy.IPBlock) error {
	// prefix given twice is the merge of both: each part keeps its last value.
	var addr []byte
	var bits uint32
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireBytes:
			if err := prefixFields(f.b, &addr, &bits); err != nil {
				return err
			}
		case 2<<3 | wireBytes:
			var xAddr []byte
			var xBits uint32
			if err := prefixFields(f.b, &xAddr, &xBits); err != nil {
				return fmt.Errorf("except %d: %w", len(blk.Except), err)
			}
			x, err := prefixFromWire(xAddr, xBits)
			if err != nil {
				return fmt.Errorf("except %d: %w", len(blk.Except), err)
			}
			blk.Except = append(blk.Except, x)
		}
	}
	if r.err != nil {
		return r.err
	}
	var err error
	blk.Prefix, err = prefixFromWire(addr, bits)
	return err
}

// prefixFields decodes a Prefix's fields into *addr and *bits (merging into
// what they hold).
func prefixFields(b []byte, addr *[]byte, bits *uint32) error {
	r := wireReader{b: b}
	for r.next() {
		f := &r.f
		switch f.tag {
		case 1<<3 | wireBytes:
			*addr = f.b
		case 2<<3 | wireVarint:
			*bits = uint32(f.u)
		}
	}
	return r.err
}

// prefixFromWire is prefixFromProto on the Prefix fields.
func prefixFromWire(addr []byte, bits uint32) (netip.Prefix, error) {
	if len(addr) == 0 {
		if bits != 0 {
			return netip.Prefix{}, invalid("prefix /%d has no address", bits)
		}
		return netip.Prefix{}, nil
	}
	a, err := addrFromBytes(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	if bits > uint32(a.BitLen()) {
		return netip.Prefix{}, invalid("prefix %s/%d: more bits than the address", a, bits)
	}
	return netip.PrefixFrom(a, int(bits)), nil
}
