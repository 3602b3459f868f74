package delivery

import (
	"bytes"
	"testing"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/eventgen"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// appendDistributed writes exactly what proto.Marshal writes for the decoded event's delivered form.
func TestAppendDistributedMatchesMarshal(t *testing.T) {
	t.Parallel()
	var events []*pdsv1.PortfolioDistribution
	gen := eventgen.New(eventgen.Options{Portfolios: 7, Seed: 42})
	for i := range 50 {
		ev := gen.Next()
		ev.EventId = "0192e3a4-0000-7000-8000-00000000000" + string(rune('0'+i%10))
		ev.Timestamp = "2025-06-21T10:00:00.000Z"
		ev.Routing.Topic = "portfolio/state/updated"
		ev.Routing.RoutingKey = ev.GetData().GetPortfolioId() + ".state.update"
		events = append(events, ev)
	}
	events = append(events,
		&pdsv1.PortfolioDistribution{},
		&pdsv1.PortfolioDistribution{EventId: "no routing, no data"},
		&pdsv1.PortfolioDistribution{EventId: "empty routing and data", Routing: &pdsv1.RoutingInfo{}, Data: &pdsv1.PortfolioData{}},
		&pdsv1.PortfolioDistribution{EventId: "targets with an empty one", Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"a", "", "b"}, Priority: 9}},
		&pdsv1.PortfolioDistribution{DataType: pdsv1.PortfolioDataType_RISK_BUDGET, Routing: &pdsv1.RoutingInfo{Priority: 2}},
	)
	for i, ev := range events {
		stored, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		// What the delivery engine decodes, with unknown fields from a newer publisher left in place.
		stored = protowire.AppendTag(stored, 99, protowire.VarintType)
		stored = protowire.AppendVarint(stored, 7)
		var decoded pdsv1.PortfolioDistribution
		if err := proto.Unmarshal(stored, &decoded); err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(routing.ToDistributed(&decoded))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendDistributed([]byte("prefix"), stored)
		if !ok || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("event %d: ok %v\n got: %x\nwant: prefix%x", i, ok, got, want)
		}
	}
}

// Bytes not laid out as PDS stores events are left to proto.Marshal.
func TestAppendDistributedRefusesOddLayouts(t *testing.T) {
	t.Parallel()
	twice := protowire.AppendTag(nil, storedEventID, protowire.BytesType)
	twice = protowire.AppendString(twice, "a")
	twice = protowire.AppendTag(twice, storedEventID, protowire.BytesType)
	twice = protowire.AppendString(twice, "b")
	wrongType := protowire.AppendTag(nil, storedData, protowire.VarintType)
	wrongType = protowire.AppendVarint(wrongType, 1)
	for name, stored := range map[string][]byte{
		"event_id twice":   twice,
		"data as a varint": wrongType,
		"truncated":        []byte{0x0a, 0x05, 'a'},
		"bad tag":          []byte{0xff},
	} {
		if _, ok := appendDistributed(nil, stored); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func BenchmarkEncodeDelivered(b *testing.B) {
	ev := eventgen.New(eventgen.Options{Seed: 1}).Next()
	ev.EventId, ev.Timestamp = "0192e3a4-0000-7000-8000-000000000001", "2025-06-21T10:00:00.000Z"
	stored, err := proto.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	var decoded pdsv1.PortfolioDistribution
	if err := proto.Unmarshal(stored, &decoded); err != nil {
		b.Fatal(err)
	}
	distributed := routing.ToDistributed(&decoded)
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(distributed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("from-stored-bytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := appendDistributed(make([]byte, 0, len(stored)+16), stored); !ok {
				b.Fatal("refused")
			}
		}
	})
}
