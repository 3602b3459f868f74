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
		for _, path := range doublePaths(member.Message(), "data."+string(member.Name())) {
			checked++
			t.Run(path.name, func(t *testing.T) {
				t.Parallel()
				ev := validEvent()
				ev.DataType = dataTypes[member.Name()]
				data := ev.Data.ProtoReflect()
				details := data.Mutable(member).Message()
				path.setNaN(details)

				err := routing.Normalize(ev, "", publishTime)

				var errs apierr.FieldErrors
				if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != path.name {
					t.Fatalf("NaN in %s: Normalize error = %v, want exactly one field error on %s", path.name, err, path.name)
				}
			})
		}
	}
	if checked < 15 {
		t.Fatalf("found only %d double fields in the details messages; the reflection walk is broken", checked)
	}
}

type doublePath struct {
	name   string
	setNaN func(m protoreflect.Message)
}

// doublePaths lists every double field reachable from md, entering repeated messages at index 0.
func doublePaths(md protoreflect.MessageDescriptor, prefix string) []doublePath {
	var out []doublePath
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := prefix + "." + string(fd.Name())
		switch {
		case fd.Kind() == protoreflect.DoubleKind && !fd.IsList():
			out = append(out, doublePath{name: name, setNaN: func(m protoreflect.Message) {
				m.Set(fd, protoreflect.ValueOfFloat64(math.NaN()))
			}})
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			for _, inner := range doublePaths(fd.Message(), name+"[0]") {
				out = append(out, doublePath{name: inner.name, setNaN: func(m protoreflect.Message) {
					list := m.Mutable(fd).List()
					elem := list.NewElement()
					list.Append(elem)
					inner.setNaN(elem.Message())
				}})
			}
		case fd.Kind() == protoreflect.MessageKind:
			for _, inner := range doublePaths(fd.Message(), name) {
				out = append(out, doublePath{name: inner.name, setNaN: func(m protoreflect.Message) {
					inner.setNaN(m.Mutable(fd).Message())
				}})
			}
		}
	}
	return out
}
