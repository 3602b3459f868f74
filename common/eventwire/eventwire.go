// Package eventwire decodes Publish requests for the publish path, which checks an event's details
// (every string UTF-8, every number finite) and stores them as they came, but never reads them. So each
// event's details stay encoded, in its PortfolioData's unknown fields (see Details and CheckDetails), and
// the decoded strings share one copy of the request. Decoding every details message into Go values was
// two thirds of a Publish call's allocations.
//
// Encoding a decoded event (fastproto.Append, proto.Marshal) writes its details back where they were: the
// details fields have the highest numbers of PortfolioData, so the encoding is the one a fully decoded
// event has.
package eventwire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// Field numbers of the messages decoded here, taken from their descriptors so a renumbering cannot go
// unnoticed.
var (
	requestEvents = fieldNumber((*pdsv1.PublishRequest)(nil), "events")

	eventID        = fieldNumber((*pdsv1.PortfolioDistribution)(nil), "event_id")
	eventTimestamp = fieldNumber((*pdsv1.PortfolioDistribution)(nil), "timestamp")
	eventDataType  = fieldNumber((*pdsv1.PortfolioDistribution)(nil), "data_type")
	eventData      = fieldNumber((*pdsv1.PortfolioDistribution)(nil), "data")
	eventRouting   = fieldNumber((*pdsv1.PortfolioDistribution)(nil), "routing")

	dataPortfolioID        = fieldNumber((*pdsv1.PortfolioData)(nil), "portfolio_id")
	dataTotalValue         = fieldNumber((*pdsv1.PortfolioData)(nil), "total_value")
	dataPerformanceMetrics = fieldNumber((*pdsv1.PortfolioData)(nil), "performance_metrics")

	routingTopic           = fieldNumber((*pdsv1.RoutingInfo)(nil), "topic")
	routingKey             = fieldNumber((*pdsv1.RoutingInfo)(nil), "routing_key")
	routingTargetWorkflows = fieldNumber((*pdsv1.RoutingInfo)(nil), "target_workflows")
	routingPriority        = fieldNumber((*pdsv1.RoutingInfo)(nil), "priority")

	// detailsFields are the members of PortfolioData's details oneof.
	detailsFields = (*pdsv1.PortfolioData)(nil).ProtoReflect().Descriptor().Oneofs().ByName("details").Fields()
)

func fieldNumber(m protoreflect.ProtoMessage, name protoreflect.Name) protowire.Number {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("eventwire: %s has no field %s", m.ProtoReflect().Descriptor().FullName(), name))
	}
	return fd.Number()
}

// detailsMember returns the details member numbered num, or nil.
func detailsMember(num protowire.Number) protoreflect.FieldDescriptor {
	return detailsFields.ByNumber(num)
}

// errSeveralDetails makes an event whose data holds more than one details field go through the generated
// decoder, which merges or replaces them as protobuf says.
var errSeveralDetails = errors.New("several details fields")

// DecodePublishRequest decodes data into req as req.UnmarshalVT would, except that each event's details
// stay encoded (see the package comment), strings share one copy of data, and the events, their data and
// their routing are allocated once for the request. Like UnmarshalVT it does not check that strings are
// UTF-8; routing.Normalize does, details included.
//
// The decoded strings keep the copy of data alive: anything kept beyond the request must not hold them.
//
// A request of more than maxEvents events is not decoded: its Events are as many nils, for the caller to
// refuse by their count. Decoding them would take memory many times the request's size (an empty event
// is two bytes on the wire).
func DecodePublishRequest(req *pdsv1.PublishRequest, data []byte, maxEvents int) error {
	req.Reset()
	count, err := countEvents(data)
	if err != nil {
		return err
	}
	if count > maxEvents {
		req.Events = make([]*pdsv1.PortfolioDistribution, count)
		return nil
	}
	own := bytes.Clone(data)
	spaces := make([]eventSpace, count)
	// Target workflows of all events share one array: most events name one or two.
	workflows := make([]string, 0, 2*count)
	req.Events = make([]*pdsv1.PortfolioDistribution, count)
	var unknown []byte
	for b, i := own, 0; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return decodeError("PublishRequest", protowire.ParseError(n))
		}
		if num != requestEvents {
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				return decodeError("PublishRequest", protowire.ParseError(m))
			}
			unknown = append(unknown, b[:n+m]...)
			b = b[n+m:]
			continue
		}
		// countEvents checked the wire type and length.
		v, m := protowire.ConsumeBytes(b[n:])
		b = b[n+m:]
		space := &spaces[i]
		ev := &space.event
		if err := decodeEvent(space, v, &workflows); err != nil {
			if !errors.Is(err, errSeveralDetails) {
				return decodeError(fmt.Sprintf("PublishRequest.events[%d]", i), err)
			}
			*ev = pdsv1.PortfolioDistribution{}
			if err := ev.UnmarshalVT(v); err != nil {
				return decodeError(fmt.Sprintf("PublishRequest.events[%d]", i), err)
			}
		}
		req.Events[i] = ev
		i++
	}
	if unknown != nil {
		req.ProtoReflect().SetUnknown(unknown)
	}
	return nil
}

// countEvents returns how many events data holds, checking their framing.
func countEvents(data []byte) (int, error) {
	count := 0
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, decodeError("PublishRequest", protowire.ParseError(n))
		}
		if num == requestEvents && typ != protowire.BytesType {
			return 0, decodeError("PublishRequest", wrongWireType("events", typ))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return 0, decodeError("PublishRequest", protowire.ParseError(m))
		}
		if num == requestEvents {
			count++
		}
		b = b[n+m:]
	}
	return count, nil
}

func decodeError(at string, err error) error {
	return fmt.Errorf("decode %s: %w", at, err)
}

func wrongWireType(field string, typ protowire.Type) error {
	return fmt.Errorf("field %s has wire type %d", field, typ)
}

// eventSpace holds an event and the messages it points to, so a request's are allocated at once.
type eventSpace struct {
	event   pdsv1.PortfolioDistribution
	data    pdsv1.PortfolioData
	metrics pdsv1.PerformanceMetricsData
	routing pdsv1.RoutingInfo
}

// decodeEvent decodes one event into space.event, its messages into space's others and its target
// workflows at the end of workflows.
func decodeEvent(space *eventSpace, b []byte, workflows *[]string) error {
	ev := &space.event
	unknown, err := decodeFields(b, nil, func(num protowire.Number, typ protowire.Type, b []byte) (m int, err error) {
		switch num {
		case eventID:
			ev.EventId, m = consumeString(b, typ)
			return m, fieldError("event_id", typ, m)
		case eventTimestamp:
			ev.Timestamp, m = consumeString(b, typ)
			return m, fieldError("timestamp", typ, m)
		case eventDataType:
			var v uint64
			v, m = consumeVarint(b, typ)
			ev.DataType = pdsv1.PortfolioDataType(int32(v))
			return m, fieldError("data_type", typ, m)
		case eventData:
			var v []byte
			if v, m = consumeBytes(b, typ); m <= 0 {
				return m, fieldError("data", typ, m)
			}
			if ev.Data == nil {
				ev.Data = &space.data
			}
			return m, decodeData(ev.Data, v, &space.metrics)
		case eventRouting:
			var v []byte
			if v, m = consumeBytes(b, typ); m <= 0 {
				return m, fieldError("routing", typ, m)
			}
			if ev.Routing == nil {
				ev.Routing = &space.routing
			}
			if err := decodeRouting(ev.Routing, v, workflows); err != nil {
				return m, fmt.Errorf("routing: %w", err)
			}
			return m, nil
		}
		return 0, nil
	})
	if err == nil && unknown != nil {
		ev.ProtoReflect().SetUnknown(unknown)
	}
	return err
}

// decodeData decodes a PortfolioData into data, merging as protobuf does when data already holds one
// (the field appeared twice), with metrics as its performance metrics when it has none yet. Its details
// field is kept encoded, with any unknown fields.
func decodeData(data *pdsv1.PortfolioData, b []byte, metrics *pdsv1.PerformanceMetricsData) error {
	known := data.ProtoReflect().GetUnknown()
	hasDetails := data.GetDetails() != nil || hasDetailsField(known)
	unknown, err := decodeFields(b, known, func(num protowire.Number, typ protowire.Type, b []byte) (m int, err error) {
		switch {
		case num == dataPortfolioID:
			data.PortfolioId, m = consumeString(b, typ)
			return m, fieldError("data.portfolio_id", typ, m)
		case num == dataTotalValue:
			if typ != protowire.Fixed64Type {
				return 0, fieldError("data.total_value", typ, 0)
			}
			var v uint64
			v, m = protowire.ConsumeFixed64(b)
			data.TotalValue = math.Float64frombits(v)
			return m, fieldError("data.total_value", typ, m)
		case num == dataPerformanceMetrics:
			var v []byte
			if v, m = consumeBytes(b, typ); m <= 0 {
				return m, fieldError("data.performance_metrics", typ, m)
			}
			if data.PerformanceMetrics == nil {
				data.PerformanceMetrics = metrics
			}
			if err := data.PerformanceMetrics.UnmarshalVT(v); err != nil {
				return m, fmt.Errorf("data.performance_metrics: %w", err)
			}
			return m, nil
		case detailsMember(num) != nil:
			if hasDetails {
				return 0, errSeveralDetails
			}
			hasDetails = true
			if typ != protowire.BytesType {
				return 0, fieldError("data details", typ, 0)
			}
			// Kept as an unknown field.
		}
		return 0, nil
	})
	if err == nil && unknown != nil {
		data.ProtoReflect().SetUnknown(unknown)
	}
	return err
}

// decodeRouting decodes a RoutingInfo into r, merging into what r holds. Its target workflows are appended
// to workflows, and r's are the part appended.
func decodeRouting(r *pdsv1.RoutingInfo, b []byte, workflows *[]string) error {
	// r's workflows from an earlier part of a merged routing field come first.
	start := len(*workflows)
	*workflows = append(*workflows, r.TargetWorkflows...)
	unknown, err := decodeFields(b, nil, func(num protowire.Number, typ protowire.Type, b []byte) (m int, err error) {
		switch num {
		case routingTopic:
			r.Topic, m = consumeString(b, typ)
			return m, fieldError("topic", typ, m)
		case routingKey:
			r.RoutingKey, m = consumeString(b, typ)
			return m, fieldError("routing_key", typ, m)
		case routingTargetWorkflows:
			var s string
			if s, m = consumeString(b, typ); m > 0 {
				*workflows = append(*workflows, s)
			}
			return m, fieldError("target_workflows", typ, m)
		case routingPriority:
			var v uint64
			v, m = consumeVarint(b, typ)
			r.Priority = int32(v)
			return m, fieldError("priority", typ, m)
		}
		return 0, nil
	})
	if err != nil {
		return err
	}
	if names := (*workflows)[start:]; len(names) > 0 {
		// Capacity cut: appending to one event's workflows must not overwrite the next event's.
		r.TargetWorkflows = names[:len(names):len(names)]
	}
	if unknown != nil {
		r.ProtoReflect().SetUnknown(append(r.ProtoReflect().GetUnknown(), unknown...))
	}
	return nil
}

// decodeFields walks the fields of the encoded message b. decode consumes the value of a field it knows,
// at the front of its b, and returns the value's length; it returns 0 for a field it leaves alone, which
// is appended to unknown. decodeFields returns unknown with those fields.
func decodeFields(b, unknown []byte, decode func(num protowire.Number, typ protowire.Type, b []byte) (int, error)) ([]byte, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m, err := decode(num, typ, b[n:])
		if err != nil {
			return nil, err
		}
		if m == 0 {
			if m = protowire.ConsumeFieldValue(num, typ, b[n:]); m < 0 {
				return nil, protowire.ParseError(m)
			}
			unknown = appendField(unknown, b[:n+m])
		}
		b = b[n+m:]
	}
	return unknown, nil
}

// appendField appends one encoded field to the unknown fields in dst. The first is kept in place, in the
// request's copy: the capacity is cut so a later append copies instead of writing over what follows.
func appendField(dst, field []byte) []byte {
	if dst == nil {
		return field[:len(field):len(field)]
	}
	return append(dst, field...)
}

func consumeBytes(b []byte, typ protowire.Type) ([]byte, int) {
	if typ != protowire.BytesType {
		return nil, 0
	}
	v, m := protowire.ConsumeBytes(b)
	if m < 0 {
		return nil, m
	}
	return v, m
}

// consumeString returns the string at the front of b, sharing b's memory.
func consumeString(b []byte, typ protowire.Type) (string, int) {
	v, m := consumeBytes(b, typ)
	if m <= 0 || len(v) == 0 {
		return "", m
	}
	return unsafe.String(&v[0], len(v)), m
}

func consumeVarint(b []byte, typ protowire.Type) (uint64, int) {
	if typ != protowire.VarintType {
		return 0, 0
	}
	v, m := protowire.ConsumeVarint(b)
	if m < 0 {
		return 0, m
	}
	return v, m
}

// fieldError describes a field whose value could not be consumed (m is its consume function's result):
// m < 0 is protowire's error, m == 0 a wire type the field does not have. It is nil for m > 0.
func fieldError(field string, typ protowire.Type, m int) error {
	switch {
	case m > 0:
		return nil
	case m < 0:
		return fmt.Errorf("%s: %w", field, protowire.ParseError(m))
	default:
		return wrongWireType(field, typ)
	}
}

func hasDetailsField(fields []byte) bool {
	_, raw := findDetails(fields)
	return raw != nil
}

// findDetails returns the first details field among encoded fields, with its tag.
func findDetails(fields []byte) (protoreflect.FieldDescriptor, []byte) {
	for b := fields; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil
		}
		if fd := detailsMember(num); fd != nil {
			return fd, b[:n+m]
		}
		b = b[n+m:]
	}
	return nil, nil
}

// Details returns the details member that DecodePublishRequest left encoded in data, and its encoding as
// a field of PortfolioData (tag included: decoding it as a PortfolioData sets the member). It returns nil
// when data holds no encoded details, such as when its details were decoded.
func Details(data *pdsv1.PortfolioData) (protoreflect.FieldDescriptor, []byte) {
	if data == nil {
		return nil, nil
	}
	return findDetails(data.ProtoReflect().GetUnknown())
}
