package api

import (
	"strconv"
	"unicode/utf8"

	"connectrpc.com/connect"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"google.golang.org/protobuf/proto"
)

// jsonEncoder writes PortfolioMessages as JSON for JSON subscribers (WebSocket, Connect JSON). protojson
// costs about 15 µs per event, most of a JSON stream's CPU, and what differs between the subscribers of
// one event is only the envelope (ack id, delivery attempt): the encoder takes each event's JSON from an
// eventEncodings cache and writes the envelope around it, so an event goes through protojson once, not
// once per subscriber.
type jsonEncoder struct {
	events eventEncodings
}

func newJSONEncoder() *jsonEncoder {
	return &jsonEncoder{events: eventEncodings{encode: func(ev *pdsv1.PortfolioDistributed) ([]byte, error) {
		return jsoncodec.Marshal(ev)
	}}}
}

// appendMessage appends msg's JSON to dst: the same JSON value jsoncodec.Marshal gives.
func (e *jsonEncoder) appendMessage(dst []byte, msg *pdsv1.PortfolioMessage) ([]byte, error) {
	for _, ev := range msg.GetEvents() {
		if !utf8.ValidString(ev.GetAckId()) || ev.GetEvent() == nil {
			// Shapes the envelope writer does not handle; protojson rejects or writes them.
			return jsoncodec.MarshalOptions.MarshalAppend(dst, msg)
		}
	}
	dst = append(dst, `{"events":[`...)
	for i, ev := range msg.GetEvents() {
		if i > 0 {
			dst = append(dst, ',')
		}
		event, err := e.events.get(ev.GetEvent())
		if err != nil {
			return nil, err
		}
		dst = append(dst, `{"ack_id":`...)
		dst = appendJSONString(dst, ev.GetAckId())
		dst = append(dst, `,"event":`...)
		dst = append(dst, event...)
		dst = append(dst, `,"data_type":`...)
		if name, known := pdsv1.PortfolioDataType_name[int32(ev.GetDataType())]; known {
			dst = appendJSONString(dst, name)
		} else {
			dst = strconv.AppendInt(dst, int64(ev.GetDataType()), 10)
		}
		dst = append(dst, `,"priority":`...)
		dst = strconv.AppendInt(dst, int64(ev.GetPriority()), 10)
		dst = append(dst, `,"delivery_attempt":`...)
		dst = strconv.AppendInt(dst, int64(ev.GetDeliveryAttempt()), 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...), nil
}

// appendJSONString appends s, valid UTF-8, as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// streamCodec is jsoncodec's codec with PortfolioMessages written by a jsonEncoder, so Connect JSON
// streams share each event's encoding with every other JSON subscriber of it.
type streamCodec struct {
	connect.Codec
	encoder *jsonEncoder
}

func newStreamCodec(encoder *jsonEncoder) streamCodec {
	return streamCodec{Codec: jsoncodec.Codec(), encoder: encoder}
}

func (c streamCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend lets Connect reuse its buffers (connect.marshalAppender).
func (c streamCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	if msg, ok := v.(*pdsv1.PortfolioMessage); ok {
		return c.encoder.appendMessage(dst, msg)
	}
	if m, ok := v.(proto.Message); ok {
		return jsoncodec.MarshalOptions.MarshalAppend(dst, m)
	}
	return c.Codec.Marshal(v)
}

// MarshalStable and IsBinary keep jsoncodec's (connect.stableCodec, for cacheable GET requests).
func (c streamCodec) MarshalStable(v any) ([]byte, error) {
	return c.Codec.(interface{ MarshalStable(any) ([]byte, error) }).MarshalStable(v)
}

func (c streamCodec) IsBinary() bool { return false }
