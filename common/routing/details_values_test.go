package routing_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/eventwire"
	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// TestNormalizeRejectsNaNInEveryDetailsField sets each double field of every details message, found by
// reflection, to NaN in turn, so a field added to the proto later cannot slip past validation.
func TestNormalizeRejectsNaNInEveryDetailsField(t *testing.T) {
	t.Parallel()
	nan := protoreflect.ValueOfFloat64(math.NaN())
	checkEveryDetailsField(t, protoreflect.DoubleKind, nan, 15)
}

// TestNormalizeRejectsInvalidUTF8InEveryDetailsField does the same with a string that is not UTF-8, which
// UnmarshalVT lets through and every subscriber's protobuf decoder would refuse.
func TestNormalizeRejectsInvalidUTF8InEveryDetailsField(t *testing.T) {
	t.Parallel()
	invalid := protoreflect.ValueOfString("EUR\xff")
	checkEveryDetailsField(t, protoreflect.StringKind, invalid, 15)
}

// checkEveryDetailsField sets each field of kind in every details message to bad in turn, and expects
// Normalize to name exactly that field. minFields guards the reflection walk itself.
func checkEveryDetailsField(t *testing.T, kind protoreflect.Kind, bad protoreflect.Value, minFields int) {
	dataTypes := map[protoreflect.Name]pdsv1.PortfolioDataType{
		"portfolio_state":         pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		"performance_attribution": pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION,
		"rebalancing":             pdsv1.PortfolioDataType_REBALANCING,
		"risk_budget":             pdsv1.PortfolioDataType_RISK_BUDGET,
		"cash_management":         pdsv1.PortfolioDataType_CASH_MANAGEMENT,
	}
	oneof := (&pdsv1.PortfolioData{}).ProtoReflect().Descriptor().Oneofs().ByName("details")
	if oneof.Fields().Len() != len(dataTypes) {
		t.Fatalf("details has %d members, the test knows %d: add the new data type here", oneof.Fields().Len(), len(dataTypes))
	}
	checked := 0
	for i := range oneof.Fields().Len() {
		member := oneof.Fields().Get(i)
		for _, path := range fieldPaths(member.Message(), "data."+string(member.Name()), kind) {
			checked++
			for _, form := range detailsForms {
				t.Run(path.name+"/"+form.name, func(t *testing.T) {
					t.Parallel()
					ev := validEvent()
					ev.DataType = dataTypes[member.Name()]
					data := ev.Data.ProtoReflect()
					details := data.Mutable(member).Message()
					path.set(details, bad)

					err := routing.Normalize(form.make(t, ev), "", publishTime)

					var errs apierr.FieldErrors
					if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != path.name {
						t.Fatalf("%v in %s: Normalize error = %v, want exactly one field error on %s", bad, path.name, err, path.name)
					}
				})
			}
		}
	}
	if checked < minFields {
		t.Fatalf("found only %d %s fields in the details messages, want at least %d; the reflection walk is broken", checked, kind, minFields)
	}
}

// detailsForms are the two forms Normalize gets events in: decoded whole (JSON, other callers), and as
// Publish's protobuf decoder leaves them, details still encoded.
var detailsForms = []struct {
	name string
	make func(t testing.TB, ev *pdsv1.PortfolioDistribution) *pdsv1.PortfolioDistribution
}{
	{"decoded", func(_ testing.TB, ev *pdsv1.PortfolioDistribution) *pdsv1.PortfolioDistribution { return ev }},
	{"encoded", publishedOverTheWire},
}

// publishedOverTheWire returns ev as Publish decodes it from a protobuf request (eventwire). MarshalVT,
// unlike proto.Marshal, encodes strings that are not UTF-8.
func publishedOverTheWire(t testing.TB, ev *pdsv1.PortfolioDistribution) *pdsv1.PortfolioDistribution {
	t.Helper()
	data, err := (&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{ev}}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, data, routing.MaxEventsPerPublish); err != nil {
		t.Fatal(err)
	}
	if member, _ := eventwire.Details(req.Events[0].GetData()); ev.GetData().GetDetails() != nil && member == nil {
		t.Fatal("eventwire decoded the details; this form tests encoded details")
	}
	return req.Events[0]
}

type fieldPath struct {
	name string
	set  func(m protoreflect.Message, v protoreflect.Value)
}

// fieldPaths lists every field of kind reachable from md, entering repeated fields at index 0.
func fieldPaths(md protoreflect.MessageDescriptor, prefix string, kind protoreflect.Kind) []fieldPath {
	var out []fieldPath
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := prefix + "." + string(fd.Name())
		switch {
		case fd.Kind() == kind && fd.IsList():
			out = append(out, fieldPath{name: name + "[0]", set: func(m protoreflect.Message, v protoreflect.Value) {
				m.Mutable(fd).List().Append(v)
			}})
		case fd.Kind() == kind:
			out = append(out, fieldPath{name: name, set: func(m protoreflect.Message, v protoreflect.Value) {
				m.Set(fd, v)
			}})
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			for _, inner := range fieldPaths(fd.Message(), name+"[0]", kind) {
				out = append(out, fieldPath{name: inner.name, set: func(m protoreflect.Message, v protoreflect.Value) {
					list := m.Mutable(fd).List()
					elem := list.NewElement()
					list.Append(elem)
					inner.set(elem.Message(), v)
				}})
			}
		case fd.Kind() == protoreflect.MessageKind:
			for _, inner := range fieldPaths(fd.Message(), name, kind) {
				out = append(out, fieldPath{name: inner.name, set: func(m protoreflect.Message, v protoreflect.Value) {
					inner.set(m.Mutable(fd).Message(), v)
				}})
			}
		}
	}
	return out
}

// An event whose details Publish left encoded is stored as the same bytes as the event decoded whole,
// once Normalize filled the same defaults.
func TestNormalizedEncodedDetailsStoreAsDecoded(t *testing.T) {
	t.Parallel()
	ev := rebalancingEvent()
	ev.EventId = "evt-1"
	wire := publishedOverTheWire(t, ev)
	for _, e := range []*pdsv1.PortfolioDistribution{ev, wire} {
		if err := routing.Normalize(e, "", publishTime); err != nil {
			t.Fatal(err)
		}
	}
	want, err := fastproto.Append(nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fastproto.Append(nil, wire)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("stored as\n%x\nthe decoded event as\n%x", got, want)
	}
}

// Encoded details that no protobuf decoder accepts are reported on the details member.
func TestNormalizeReportsUndecodableDetails(t *testing.T) {
	t.Parallel()
	trade := protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "ten") // quantity is a double
	details := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), trade)
	ev := validEvent()
	ev.DataType = pdsv1.PortfolioDataType_REBALANCING
	encodedData, err := ev.Data.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	encodedData = protowire.AppendBytes(protowire.AppendTag(encodedData, 12, protowire.BytesType), details)
	encodedEvent, err := (&pdsv1.PortfolioDistribution{DataType: ev.DataType, Routing: ev.Routing}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	encodedEvent = protowire.AppendBytes(protowire.AppendTag(encodedEvent, 4, protowire.BytesType), encodedData)
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), encodedEvent), routing.MaxEventsPerPublish); err != nil {
		t.Fatal(err)
	}

	err = routing.Normalize(req.Events[0], "events[0]", publishTime)

	var errs apierr.FieldErrors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != "events[0].data.rebalancing" ||
		!strings.Contains(errs[0].Description, "is not a valid RebalancingDetails encoding") {
		t.Fatalf("Normalize error = %v, want one error on events[0].data.rebalancing saying it is not a valid encoding", err)
	}
}

// The character sets of ids and topics hold ASCII only: checkToken looks bytes up in a table of the ASCII
// characters and refuses every other byte.
func TestTokenCharactersAreASCII(t *testing.T) {
	t.Parallel()
	for name, allowed := range map[string]func(rune) bool{
		"event id": routing.IsEventIDChar, "portfolio id": routing.IsPortfolioIDChar, "topic": routing.IsTopicChar,
	} {
		for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
			if allowed(r) {
				t.Fatalf("%s characters include %q: checkToken's table cannot hold it", name, r)
			}
		}
	}
}
