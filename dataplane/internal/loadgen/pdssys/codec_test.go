package pdssys

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// The lean codec must find every event's ack id and event id in what the data plane sends, whatever else
// the events hold, and decode every other message completely.
func TestLeanCodecReadsAckAndEventIDs(t *testing.T) {
	t.Parallel()
	sent := &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
		{
			AckId: "ack-1", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Priority: 7, DeliveryAttempt: 2,
			Event: &pdsv1.PortfolioDistributed{
				EventId: "load-41", Timestamp: "2026-01-02T03:04:05.000Z",
				Distribution: &pdsv1.DistributionInfo{Topic: "t", RoutingKey: "portfolio_001.state.update", TargetWorkflows: []string{"wf-01"}},
				Data:         &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 1_000_000},
			},
		},
		{AckId: "ack-2", Event: &pdsv1.PortfolioDistributed{EventId: "load-42"}},
		{AckId: "", Event: &pdsv1.PortfolioDistributed{EventId: "load-43"}},
	}}
	data, err := proto.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	got := &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{{AckId: "left over"}}}
	if err := (leanCodec{}).Unmarshal(data, got); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if len(got.GetEvents()) != len(sent.GetEvents()) {
		t.Fatalf("decoded %d events, want %d", len(got.GetEvents()), len(sent.GetEvents()))
	}
	for i, want := range sent.GetEvents() {
		ev := got.GetEvents()[i]
		if ev.GetAckId() != want.GetAckId() || ev.GetEvent().GetEventId() != want.GetEvent().GetEventId() {
			t.Errorf("event %d: ack id %q event id %q, want %q and %q", i, ev.GetAckId(), ev.GetEvent().GetEventId(),
				want.GetAckId(), want.GetEvent().GetEventId())
		}
	}

	resp := &pdsv1.AcknowledgeResponse{UnknownAckIds: []string{"a", "b"}}
	data, err = (leanCodec{}).Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var back pdsv1.AcknowledgeResponse
	if err := (leanCodec{}).Unmarshal(data, &back); err != nil || !proto.Equal(&back, resp) {
		t.Errorf("AcknowledgeResponse round trip: %v, %v; want %v", &back, err, resp)
	}

	if err := (leanCodec{}).Unmarshal([]byte{0x0a, 0x05, 0x01}, &pdsv1.PortfolioMessage{}); err == nil {
		t.Errorf("a truncated PortfolioMessage decoded without an error")
	}
}
