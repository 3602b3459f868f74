package delivery

import (
	"bytes"
	"testing"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"google.golang.org/protobuf/proto"
)

func TestDecodedCacheSharesOneDecodingPerRecord(t *testing.T) {
	t.Parallel()
	encode := func(portfolioID string) []byte {
		b, err := proto.Marshal(&pdsv1.PortfolioDistribution{
			EventId: "e-" + portfolioID, Timestamp: "2025-06-21T10:00:00.000Z", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
			Data:    &pdsv1.PortfolioData{PortfolioId: portfolioID, TotalValue: 1},
			Routing: &pdsv1.RoutingInfo{Topic: "portfolio/state/updated", RoutingKey: portfolioID + ".state.update", TargetWorkflows: []string{"w"}, Priority: 3},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cache := newDecodedCache()
	first := encode("P-1")
	a, err := cache.decode(first, true)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !proto.Equal(a.distributed, routing.ToDistributed(a.event)) {
		t.Fatalf("distributed event %v differs from routing.ToDistributed %v", a.distributed, routing.ToDistributed(a.event))
	}
	// Another session's copy of the same record: same bytes, different buffer.
	again, err := cache.decode(append([]byte(nil), first...), true)
	if err != nil {
		t.Fatalf("decode again: %v", err)
	}
	if again != a {
		t.Error("the same record was decoded twice; sessions should share one decoding")
	}
	// The cache keeps its own copy: reusing the broker's buffer must not change a cached event.
	clear(first)
	other, err := cache.decode(encode("P-2"), true)
	if err != nil {
		t.Fatalf("decode other: %v", err)
	}
	if other == a || other.event.GetData().GetPortfolioId() != "P-2" || a.event.GetData().GetPortfolioId() != "P-1" {
		t.Errorf("records were confused: %v and %v", a.event, other.event)
	}
	if _, err := cache.decode([]byte{0xff}, true); err == nil {
		t.Error("decoding a malformed record succeeded")
	}
	// A record only one session reads is decoded on its own and not cached.
	alone, err := cache.decode(encode("P-3"), false)
	if err != nil {
		t.Fatalf("decode unshared: %v", err)
	}
	if again, _ := cache.decode(encode("P-3"), true); again == alone {
		t.Error("an unshared decoding was cached")
	}
}

// The delivered message of a decoded event is found again by pointer and encoded from its stored bytes;
// any other message is not found.
func TestDecodedCacheEncodesDeliveredEventsFromStoredBytes(t *testing.T) {
	t.Parallel()
	stored, err := proto.Marshal(&pdsv1.PortfolioDistribution{
		EventId: "e-1", Timestamp: "2025-06-21T10:00:00.000Z", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data:    &pdsv1.PortfolioData{PortfolioId: "P-1", TotalValue: 1},
		Routing: &pdsv1.RoutingInfo{Topic: "portfolio/state/updated", RoutingKey: "P-1.state.update", TargetWorkflows: []string{"w"}, Priority: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	cache := newDecodedCache()
	for _, shared := range []bool{true, false} {
		d, err := cache.decode(stored, shared)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want, err := proto.Marshal(d.distributed)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := cache.encodedDistributed(d.distributed)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("shared %v: encodedDistributed = %x, %v; want %x", shared, got, ok, want)
		}
	}
	if _, ok := cache.encodedDistributed(&pdsv1.PortfolioDistributed{EventId: "e-1"}); ok {
		t.Error("a message the cache did not hand out was found")
	}
}

// An event left encoded is the event field of the DeliveredEvent a decoding session would hand out, shared
// by the sessions of a topic and safe from appends.
func TestEncodedEventFieldIsTheDeliveredEventsEventField(t *testing.T) {
	t.Parallel()
	event := &pdsv1.PortfolioDistribution{
		EventId: "e-1", Timestamp: "2025-06-21T10:00:00.000Z", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data:    &pdsv1.PortfolioData{PortfolioId: "P-1", TotalValue: 1, Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD"}}},
		Routing: &pdsv1.RoutingInfo{Topic: "portfolio/state/updated", RoutingKey: "P-1.state.update", TargetWorkflows: []string{"w", "v"}, Priority: 3},
	}
	stored, err := proto.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.Marshal(&pdsv1.DeliveredEvent{Event: routing.ToDistributed(event)})
	if err != nil {
		t.Fatal(err)
	}
	cache := newDecodedCache()
	field, ok := cache.encodedEventField(stored, true)
	if !ok || !bytes.Equal(field, want) {
		t.Fatalf("encodedEventField = %x, %v; want %x", field, ok, want)
	}
	if cap(field) != len(field) {
		t.Errorf("capacity %d beyond length %d: an append would write into the shared field", cap(field), len(field))
	}
	if again, _ := cache.encodedEventField(bytes.Clone(stored), true); &again[0] != &field[0] {
		t.Error("the same record was encoded twice; the sessions of a topic should share one encoding")
	}
	if _, ok := cache.encodedEventField([]byte{0x0a, 0x01, 'a', 0x0a, 0x01, 'b'}, true); ok {
		t.Error("a record with its event id twice was left encoded; it must be decoded (protobuf's last value wins)")
	}
}
