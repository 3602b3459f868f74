package routing_test

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pds-platform/pds/common/apierr"
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
			t.Run(path.name, func(t *testing.T) {
				t.Parallel()
				ev := validEvent()
				ev.DataType = dataTypes[member.Name()]
				data := ev.Data.ProtoReflect()
				details := data.Mutable(member).Message()
				path.set(details, bad)

				err := routing.Normalize(ev, "", publishTime)

				var errs apierr.FieldErrors
				if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != path.name {
					t.Fatalf("%v in %s: Normalize error = %v, want exactly one field error on %s", bad, path.name, err, path.name)
				}
			})
		}
	}
	if checked < minFields {
		t.Fatalf("found only %d %s fields in the details messages, want at least %d; the reflection walk is broken", checked, kind, minFields)
	}
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
