// Package jsonrpc reads what authorization and telemetry need from a
// JSON-RPC 2.0 request body (A2A and MCP over HTTP POST) without decoding
// or re-encoding it: the top-level method and id, MCP's params.name (the
// tool of tools/call, the prompt of prompts/get) and A2A's
// params.message.contextId (the conversation). It reads a bounded prefix
// of the body (the tunnel forwards the bytes unchanged); a body that is
// not JSON, not JSON-RPC, or has duplicate member names or names that
// differ from the ones read only in case (which two parsers could read
// differently) is an error, and a field the prefix did not
// reach is reported as missing, so a caller that needs it can refuse.
//
// The tokenizer is github.com/go-json-experiment/json/jsontext (the
// streaming layer of Go's JSON v2): strict RFC 8259, valid UTF-8, no
// duplicate names, values skipped without allocating.
package jsonrpc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// DefaultLimit is the body prefix a scan reads by default.
const DefaultLimit = 64 << 10

// MaxBatch bounds the calls of a batch that are read; a longer batch is
// an error (ErrBatchTooLong).
const MaxBatch = 64

// Call is one request of a body.
type Call struct {
	Method string
	// ID is the request id as it appeared (a JSON string or number, or
	// null), for an error answer that must carry it; nil for a
	// notification (no id member).
	ID jsontext.Value
	// Name is params.name (MCP tools/call, prompts/get), ContextID
	// params.message.contextId (A2A message/send and message/stream);
	// "" when absent.
	Name, ContextID string
	// Complete is false when the prefix ended inside this call: members
	// after that point were not seen.
	Complete bool
}

// Body is what a scan found.
type Body struct {
	Calls []Call
	Batch bool // the body is a JSON array (a JSON-RPC batch)
}

// Errors. Each wraps ErrInvalid except ErrTruncated's uses (see Scan).
var (
	ErrInvalid      = errors.New("invalid JSON-RPC request")
	ErrNotJSONRPC   = fmt.Errorf("%w: not a JSON-RPC 2.0 request object", ErrInvalid)
	ErrBatchTooLong = fmt.Errorf("%w: batch longer than %d calls", ErrInvalid, MaxBatch)
	ErrEmptyBatch   = fmt.Errorf("%w: empty batch", ErrInvalid)
)

// Scan reads the JSON-RPC request(s) in body, of which only the first
// limit bytes are looked at (DefaultLimit when limit <= 0). body may be a
// prefix of the whole: then truncated is true and a scan that reaches its
// end reports the calls seen so far, the last one not Complete. An error
// wraps ErrInvalid for bytes that are not a JSON-RPC 2.0 request or
// batch.
func Scan(body []byte, truncated bool, limit int) (Body, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	if len(body) > limit {
		body, truncated = body[:limit], true
	}
	d := jsontext.NewDecoder(bytes.NewReader(body))
	var out Body
	switch d.PeekKind() {
	case '{':
		c, err := scanCall(d)
		if c != nil {
			out.Calls = append(out.Calls, *c)
		}
		if err != nil {
			return out, cut(err, truncated)
		}
	case '[':
		out.Batch = true
		if _, err := d.ReadToken(); err != nil {
			return out, cut(err, truncated)
		}
		for d.PeekKind() != ']' {
			if len(out.Calls) == MaxBatch {
				return out, ErrBatchTooLong
			}
			if d.PeekKind() != '{' {
				if _, err := d.ReadToken(); err != nil { // what is there, or why not
					return out, cut(err, truncated)
				}
				return out, fmt.Errorf("%w: batch element is not an object", ErrNotJSONRPC)
			}
			c, err := scanCall(d)
			if c != nil {
				out.Calls = append(out.Calls, *c)
			}
			if err != nil {
				return out, cut(err, truncated)
			}
		}
		if _, err := d.ReadToken(); err != nil {
			return out, cut(err, truncated)
		}
		if len(out.Calls) == 0 {
			return out, ErrEmptyBatch
		}
	default:
		if _, err := d.ReadToken(); err != nil {
			return out, cut(err, truncated)
		}
		return out, ErrNotJSONRPC
	}
	if _, err := d.ReadToken(); err != io.EOF {
		if err == nil || !truncated || !errors.Is(err, io.ErrUnexpectedEOF) {
			return out, fmt.Errorf("%w: data after the request", ErrInvalid)
		}
	}
	return out, nil
}

// cut turns an error at the end of a truncated prefix into nil (the rest
// was not looked at); any other error is the body's.
func cut(err error, truncated bool) error {
	switch {
	case err == nil:
		return nil
	case truncated && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
		return nil
	case errors.Is(err, ErrInvalid):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: body ends inside the JSON", ErrInvalid)
	}
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}

// scanCall reads one request object. It returns the call read so far
// (nil if none began) and the error that stopped it.
func scanCall(d *jsontext.Decoder) (*Call, error) {
	if _, err := d.ReadToken(); err != nil { // {
		return nil, err
	}
	c := &Call{}
	version := false
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			return c, err
		}
		name := tok.String()
		if err := caseVariant(name, "jsonrpc", "method", "id", "params"); err != nil {
			return c, err
		}
		switch name {
		case "jsonrpc":
			v, err := d.ReadToken()
			if err != nil {
				return c, err
			}
			if v.Kind() != '"' || v.String() != "2.0" {
				return c, fmt.Errorf("%w: jsonrpc is not \"2.0\"", ErrNotJSONRPC)
			}
			version = true
		case "method":
			v, err := d.ReadToken()
			if err != nil {
				return c, err
			}
			if v.Kind() != '"' {
				return c, fmt.Errorf("%w: method is not a string", ErrNotJSONRPC)
			}
			c.Method = v.String()
		case "id":
			v, err := d.ReadValue()
			if err != nil {
				return c, err
			}
			if k := v.Kind(); k != '"' && k != '0' && k != 'n' {
				return c, fmt.Errorf("%w: id is not a string, number or null", ErrNotJSONRPC)
			}
			c.ID = v.Clone()
		case "params":
			if err := scanParams(d, c); err != nil {
				return c, err
			}
		default:
			if err := d.SkipValue(); err != nil {
				return c, err
			}
		}
	}
	if _, err := d.ReadToken(); err != nil { // }
		return c, err
	}
	c.Complete = true
	if !version || c.Method == "" {
		return c, fmt.Errorf("%w: jsonrpc \"2.0\" and a method are required", ErrNotJSONRPC)
	}
	return c, nil
}

// scanParams reads params for name and message.contextId; anything else
// (an array of params, other members) is skipped.
func scanParams(d *jsontext.Decoder, c *Call) error {
	if d.PeekKind() != '{' {
		return d.SkipValue()
	}
	if _, err := d.ReadToken(); err != nil {
		return err
	}
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String() // before the next call on d voids tok
		if err := caseVariant(name, "name", "message"); err != nil {
			return err
		}
		switch {
		case name == "name" && d.PeekKind() == '"':
			v, err := d.ReadToken()
			if err != nil {
				return err
			}
			c.Name = v.String()
		case name == "message" && d.PeekKind() == '{':
			if err := scanMessage(d, c); err != nil {
				return err
			}
		default:
			if err := d.SkipValue(); err != nil {
				return err
			}
		}
	}
	_, err := d.ReadToken()
	return err
}

// scanMessage reads an A2A message object for contextId.
func scanMessage(d *jsontext.Decoder, c *Call) error {
	if _, err := d.ReadToken(); err != nil {
		return err
	}
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String()
		if err := caseVariant(name, "contextId"); err != nil {
			return err
		}
		if name == "contextId" && d.PeekKind() == '"' {
			v, err := d.ReadToken()
			if err != nil {
				return err
			}
			c.ContextID = v.String()
			continue
		}
		if err := d.SkipValue(); err != nil {
			return err
		}
	}
	_, err := d.ReadToken()
	return err
}

// ErrAmbiguous is a member name that differs from one this package reads
// only in case ("Method", "pArAms"): Go's encoding/json, and others,
// match member names case-insensitively, so the app could read a method
// or tool this scan did not see.
var ErrAmbiguous = fmt.Errorf("%w: a member name differs from a JSON-RPC one only in case", ErrInvalid)

// caseVariant returns ErrAmbiguous when name folds to one of names
// without being it.
func caseVariant(name string, names ...string) error {
	for _, n := range names {
		if name != n && strings.EqualFold(name, n) {
			return fmt.Errorf("%w: %q", ErrAmbiguous, name)
		}
	}
	return nil
}
