// Package jsoncodec is the one JSON form of PDS messages on every surface (Connect JSON, REST, WebSocket):
// the specification's snake_case field names, with unset fields present, so subscribers see exactly
// `{"event_id", "timestamp", "distribution": {...}, "data": {...}}`. Connect's default JSON codec uses
// lowerCamelCase; pass connect.WithCodec(jsoncodec.Codec()) to every handler and client to replace it.
package jsoncodec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MarshalOptions writes proto field names (snake_case) and emits unpopulated fields, so every key of the
// specification is present even when its value is zero. Unset oneof members are still omitted.
var MarshalOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// UnmarshalOptions accepts both proto and lowerCamelCase names (protojson always does) and rejects unknown
// fields, so a misspelt field is an error rather than silently dropped data.
var UnmarshalOptions = protojson.UnmarshalOptions{DiscardUnknown: false}

// Marshal encodes m as JSON with MarshalOptions.
func Marshal(m proto.Message) ([]byte, error) {
	b, err := MarshalOptions.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s as json: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return b, nil
}

// Unmarshal decodes JSON into m with UnmarshalOptions.
func Unmarshal(b []byte, m proto.Message) error {
	if err := UnmarshalOptions.Unmarshal(b, m); err != nil {
		return fmt.Errorf("unmarshal %s from json: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// Codec returns the connect.Codec named "json" that uses MarshalOptions and UnmarshalOptions. Registering
// it replaces Connect's built-in "json" codec (and serves "application/json" as well as
// "application/connect+json"); the codec is stateless and safe for concurrent use.
func Codec() connect.Codec { return codec{} }

type codec struct{}

var _ connect.Codec = codec{}

func (codec) Name() string { return "json" }

func (codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("json codec: %T is not a proto.Message", v)
	}
	return Marshal(m)
}

// MarshalAppend lets Connect reuse its buffers (connect.marshalAppender).
func (codec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("json codec: %T is not a proto.Message", v)
	}
	return MarshalOptions.MarshalAppend(dst, m)
}

func (codec) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("json codec: %T is not a proto.Message", v)
	}
	if len(b) == 0 {
		// Same rule as Connect's own JSON codec: an empty request body is "{}" spelt wrongly.
		return errors.New("json codec: zero-length payload is not a valid JSON object; send {} for an empty message")
	}
	return Unmarshal(b, m)
}

// MarshalStable gives the same bytes for the same message (connect.stableCodec, used for cacheable GET
// requests): protojson randomises whitespace, so the output is compacted.
func (c codec) MarshalStable(v any) ([]byte, error) {
	b, err := c.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, fmt.Errorf("json codec: compact: %w", err)
	}
	return out.Bytes(), nil
}

// IsBinary reports false: the encoding is text (connect.stableCodec contract, used for GET requests).
func (codec) IsBinary() bool { return false }
