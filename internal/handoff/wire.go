// Package handoff passes enrolled pods, each with its network namespace file
// descriptor, from agentd to ztunnel over a SOCK_SEQPACKET unix socket.
//
// agentd listens (Listen, Server.Run); ztunnel connects (Connect). On every
// (re)connection agentd first sends the full snapshot, one add per pod and
// then snapshot-end with the number of pods it sent, and afterwards
// incremental add and del messages. Each message is one JSON packet; an
// add carries the pod's netns fd as SCM_RIGHTS. ztunnel acknowledges every
// message and agentd sends the next one only after the acknowledgement.
// The snapshot is the adds before snapshot-end: ztunnel collects their
// UIDs itself, so a snapshot has no size limit (protocol version 1 listed
// the UIDs in snapshot-end, which capped a node at 2048 pods).
//
// Wire format (protocol Version 2), one JSON object per packet, at most
// 128 KiB:
//
//	{"v":2,"type":"add","seq":N,"pod":{"uid","name","namespace","ips","netnsCookie"}}  + 1 fd
//	{"v":2,"type":"del","seq":N,"uid":"..."}
//	{"v":2,"type":"snapshot-end","seq":N,"pods":N}
//	{"v":2,"type":"handover","seq":N}
//	{"v":2,"type":"ack","seq":N,"ok":true,"takeover":true,"started":T}  or  {"v":2,"type":"ack","seq":N,"error":"...","takeover":true,"started":T}
//
// seq starts at 1 on every connection. A message ztunnel cannot use (bad
// JSON, other version, unknown type, an add without exactly one fd) is
// answered with an error ack; agentd drops a client whose ack is late,
// malformed or for the wrong seq, and the client reconnects.
//
// # Hand-over to a successor
//
// To upgrade ztunnel without downtime a new ztunnel starts beside the old
// one and connects while the old one is still agentd's current client.
// agentd makes the new connection a candidate: it gets the full snapshot
// and from then on every add and del the current client gets. A client
// that understands hand-over sets "takeover" on every ack it sends. Once a
// candidate acknowledges its snapshot-end with ok and takeover it has set
// every pod up, and agentd promotes it to current. agentd then sends the
// previous current client a handover when that client's acks carried
// takeover: the client stops accepting for every pod, drains, acks, and
// ends its connection without reconnecting; agentd closes the connection
// after the ack or the ack timeout. A previous client without takeover
// (an older ztunnel) is closed at once instead. A candidate that rejects
// its snapshot-end or does not set takeover stays a candidate and keeps
// getting every update; when the current client goes away the oldest
// candidate becomes current. Acks also carry "started", when the client's
// process started (Unix nanoseconds): a candidate that started before the
// current client (an agentd restart during an upgrade, the old ztunnel
// reconnecting after the new one) is the one sent the handover once it
// acked its snapshot, and the newer client stays current.
//
// Both extensions stay within version 2: an older agentd ignores
// "takeover" and, seeing a second connection, closes the first one; an
// older ztunnel never sets takeover (so it is never promoted while a
// current client exists and never sent a handover) and would answer a
// handover with an error ack for an unknown type.
package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// Version is the wire protocol version carried in every message.
const Version = 2

// maxMessageSize caps one packet; anything larger is rejected.
const maxMessageSize = 128 << 10

// Message types.
const (
	typeAdd         = "add"          // agentd -> ztunnel, with one netns fd
	typeDel         = "del"          // agentd -> ztunnel
	typeSnapshotEnd = "snapshot-end" // agentd -> ztunnel, after the full snapshot
	typeHandover    = "handover"     // agentd -> ztunnel: a successor has the pods
	typeAck         = "ack"          // ztunnel -> agentd, for every message
)

// Pod is one enrolled pod as ztunnel needs it.
type Pod struct {
	UID         string       `json:"uid"`
	Name        string       `json:"name"`
	Namespace   string       `json:"namespace"`
	IPs         []netip.Addr `json:"ips"`
	NetnsCookie uint64       `json:"netnsCookie"`
	// Gate: the pod's containers wait for this add (agentd's CNI gate).
	// ztunnel acknowledges it once the pod is set up or failed, waiting a
	// moment for its config to know the pod, so an OK ack means the pod's
	// listeners are up.
	Gate bool `json:"gate,omitempty"`
}

// message is the single wire shape; Type says which fields are set.
type message struct {
	V     int    `json:"v"`
	Type  string `json:"type"`
	Seq   uint64 `json:"seq"`
	Pod   *Pod   `json:"pod,omitempty"`   // add
	UID   string `json:"uid,omitempty"`   // del
	Pods  int    `json:"pods,omitempty"`  // snapshot-end: the adds of the snapshot
	OK    bool   `json:"ok,omitempty"`    // ack
	Error string `json:"error,omitempty"` // ack with OK false
	// Takeover, on an ack, says the client understands handover; clients
	// of this version set it on every ack.
	Takeover bool `json:"takeover,omitempty"`
	// Started, on an ack, is when the client's process started (Unix
	// nanoseconds): of two ztunnels that both set every pod up, the one
	// started later keeps the pods (an agentd restart in the middle of an
	// upgrade reconnects both, in either order).
	Started int64 `json:"started,omitempty"`
}

var errTooLarge = fdpass.ErrTooLarge

// decode parses and validates one packet. It never panics. When the packet
// is JSON but invalid, it returns the message too (for its Seq) with the error.
func decode(data []byte) (*message, error) {
	if len(data) > maxMessageSize {
		return nil, errTooLarge
	}
	var m message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	if m.V != Version {
		return &m, fmt.Errorf("unsupported protocol version %d", m.V)
	}
	if err := m.validate(); err != nil {
		return &m, fmt.Errorf("%s message %d: %w", m.Type, m.Seq, err)
	}
	return &m, nil
}

// validate checks the fields that m.Type requires.
func (m *message) validate() error {
	switch m.Type {
	case typeAdd:
		if m.Pod == nil || m.Pod.UID == "" {
			return errors.New("missing pod uid")
		}
		for _, ip := range m.Pod.IPs {
			if !ip.IsValid() {
				return errors.New("invalid pod ip")
			}
		}
	case typeDel:
		if m.UID == "" {
			return errors.New("missing uid")
		}
	case typeSnapshotEnd:
		if m.Pods < 0 {
			return errors.New("negative pod count")
		}
	case typeHandover, typeAck:
	default:
		return fmt.Errorf("unknown message type %q", m.Type)
	}
	return nil
}

// encode marshals m with the current version.
func encode(m *message) ([]byte, error) {
	m.V = Version
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	if len(data) > maxMessageSize {
		return nil, fmt.Errorf("encode %s message: %w", m.Type, errTooLarge)
	}
	return data, nil
}
