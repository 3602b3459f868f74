package api

import (
	"errors"
	"reflect"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/eventwire"
	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers of pds.v1.PortfolioMessage and pds.v1.DeliveredEvent (proto/pds/v1/stream.proto).
const (
	fieldMessageEvents     = 1
	fieldDeliveredAckID    = 1
	fieldDeliveredEvent    = 2
	fieldDeliveredDataType = 3
	fieldDeliveredPriority = 4
	fieldDeliveredAttempt  = 5
	protoCodecName         = "proto"
)

// protoEncoder writes PortfolioMessages in the protobuf binary encoding with each event's bytes taken
// from an eventEncodings cache, so an event delivered to N subscribers is encoded once. The output is
// byte for byte what proto.Marshal writes.
type protoEncoder struct {
	events eventEncodings
}

// newProtoEncoder returns an encoder that takes an event's encoding from stored when it has it (the
// delivery engine writes it from the stored bytes), and marshals the event otherwise.
func newProtoEncoder(stored func(*pdsv1.PortfolioDistributed) ([]byte, bool)) *protoEncoder {
	return &protoEncoder{events: eventEncodings{encode: func(ev *pdsv1.PortfolioDistributed) ([]byte, error) {
		if stored != nil {
			if encoded, ok := stored(ev); ok {
				return encoded, nil
			}
		}
		return ev.MarshalVT()
	}}}
}

// appendMessage appends msg's encoding to dst.
func (e *protoEncoder) appendMessage(dst []byte, msg *pdsv1.PortfolioMessage) ([]byte, error) {
	if len(msg.ProtoReflect().GetUnknown()) > 0 {
		return proto.MarshalOptions{}.MarshalAppend(dst, msg)
	}
	for _, ev := range msg.GetEvents() {
		// proto.Marshal writes an empty message for a nil element; this writer never sees one from the
		// delivery engine.
		if ev == nil {
			return nil, errors.New("encode stream message: nil delivered event")
		}
		// An event the delivery engine left encoded (delivery.StreamOptions.EncodedEvents) has no Event and
		// its event field in the unknown fields: written where the event goes, the output is what
		// proto.Marshal writes for the decoded event. A message with both is left to proto.Marshal.
		preEncoded := ev.ProtoReflect().GetUnknown()
		if len(preEncoded) > 0 && ev.GetEvent() != nil {
			return proto.MarshalOptions{}.MarshalAppend(dst, msg)
		}
		var event []byte
		if ev.GetEvent() != nil {
			var err error
			if event, err = e.events.get(ev.GetEvent()); err != nil {
				return nil, err
			}
		}
		size := len(preEncoded)
		if id := ev.GetAckId(); id != "" {
			size += protowire.SizeTag(fieldDeliveredAckID) + protowire.SizeBytes(len(id))
		}
		if ev.GetEvent() != nil {
			size += protowire.SizeTag(fieldDeliveredEvent) + protowire.SizeBytes(len(event))
		}
		if v := ev.GetDataType(); v != 0 {
			size += protowire.SizeTag(fieldDeliveredDataType) + protowire.SizeVarint(uint64(int64(v)))
		}
		if v := ev.GetPriority(); v != 0 {
			size += protowire.SizeTag(fieldDeliveredPriority) + protowire.SizeVarint(uint64(int64(v)))
		}
		if v := ev.GetDeliveryAttempt(); v != 0 {
			size += protowire.SizeTag(fieldDeliveredAttempt) + protowire.SizeVarint(uint64(int64(v)))
		}
		dst = protowire.AppendTag(dst, fieldMessageEvents, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		if id := ev.GetAckId(); id != "" {
			dst = protowire.AppendTag(dst, fieldDeliveredAckID, protowire.BytesType)
			dst = protowire.AppendString(dst, id)
		}
		if ev.GetEvent() != nil {
			dst = protowire.AppendTag(dst, fieldDeliveredEvent, protowire.BytesType)
			dst = protowire.AppendBytes(dst, event)
		}
		dst = append(dst, preEncoded...)
		if v := ev.GetDataType(); v != 0 {
			dst = protowire.AppendTag(dst, fieldDeliveredDataType, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(int64(v)))
		}
		if v := ev.GetPriority(); v != 0 {
			dst = protowire.AppendTag(dst, fieldDeliveredPriority, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(int64(v)))
		}
		if v := ev.GetDeliveryAttempt(); v != 0 {
			dst = protowire.AppendTag(dst, fieldDeliveredAttempt, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(int64(v)))
		}
	}
	return dst, nil
}

// streamProtoCodec is Connect's protobuf codec with PortfolioMessages written by a protoEncoder. It
// serves the Connect, gRPC and gRPC-Web protocols, which all name their binary codec "proto".
type streamProtoCodec struct {
	encoder *protoEncoder
}

var _ connect.Codec = streamProtoCodec{}

func (streamProtoCodec) Name() string { return protoCodecName }

func (c streamProtoCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend lets Connect reuse its buffers (connect.marshalAppender).
func (c streamProtoCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	switch m := v.(type) {
	case *pdsv1.PortfolioMessage:
		return c.encoder.appendMessage(dst, m)
	case proto.Message:
		return fastproto.AppendMessage(dst, m)
	default:
		return nil, errNotProto(v)
	}
}

func (streamProtoCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *pdsv1.PublishRequest:
		// Publish checks the events' details and stores them as they came, so they stay encoded. Strings
		// are not checked for UTF-8 here either: Publish checks every one (routing.Normalize).
		return eventwire.DecodePublishRequest(m, data, routing.MaxEventsPerPublish)
	case proto.Message:
		return proto.Unmarshal(data, m)
	default:
		return errNotProto(v)
	}
}

// MarshalStable and IsBinary are Connect's own (connect.stableCodec, for cacheable GET requests).
func (streamProtoCodec) MarshalStable(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, errNotProto(v)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func (streamProtoCodec) IsBinary() bool { return true }

func errNotProto(v any) error {
	return connect.NewError(connect.CodeInternal, errors.New("proto codec: "+typeName(v)+" is not a proto.Message"))
}

func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).String()
}
