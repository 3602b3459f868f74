package api

import (
	"bytes"
	"testing"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestProtoEncoderWritesWhatProtoMarshalWrites: protobuf subscribers must get the same bytes whichever
// encoder wrote them, including when several messages share one event.
func TestProtoEncoderWritesWhatProtoMarshalWrites(t *testing.T) {
	t.Parallel()
	shared := &pdsv1.PortfolioDistributed{
		EventId: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Timestamp: "2025-06-21T10:00:00.000Z",
		Distribution: &pdsv1.DistributionInfo{Topic: "portfolio/state/updated", RoutingKey: "portfolio_001.state.update",
			TargetWorkflows: []string{"reporting_analytics", "user_interface"}},
		Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 1000000,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.012, YtdReturn: 0.085}},
	}
	tests := []struct {
		name string
		msg  *pdsv1.PortfolioMessage
	}{
		{name: "no events", msg: &pdsv1.PortfolioMessage{}},
		{name: "one event", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{AckId: "kq3c5xnd7mv2pa4s6ebz.1a-0", Event: shared, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Priority: 5, DeliveryAttempt: 1},
		}}},
		{name: "shared event twice, auto-ack, negative and unknown numbers", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{Event: shared, DeliveryAttempt: 300},
			{AckId: "a.2", Event: shared, DataType: 42, Priority: -1},
		}}},
		{name: "empty and missing events", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{AckId: "a.1", Event: &pdsv1.PortfolioDistributed{}}, {AckId: "a.2"}, {},
		}}},
	}
	encoder := newProtoEncoder(nil)
	for _, tt := range tests {
		t.Run(tt.name+", events left encoded", func(t *testing.T) {
			want, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("proto.Marshal: %v", err)
			}
			got, err := encoder.appendMessage(nil, leftEncoded(t, tt.msg))
			if err != nil {
				t.Fatalf("appendMessage: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("bytes differ from proto.Marshal of the decoded events\n got: %x\nwant: %x", got, want)
			}
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("proto.Marshal: %v", err)
			}
			for round := range 2 { // the second round takes the events from the cache
				got, err := encoder.appendMessage([]byte("prefix"), tt.msg)
				if err != nil {
					t.Fatalf("round %d: appendMessage: %v", round, err)
				}
				if !bytes.Equal(got, append([]byte("prefix"), want...)) {
					t.Fatalf("round %d: bytes differ from proto.Marshal\n got: %x\nwant: prefix%x", round, got, want)
				}
			}
		})
	}
}

// leftEncoded returns msg as the delivery engine hands it to a protobuf stream (delivery.StreamOptions
// .EncodedEvents): each event's Event field encoded into its unknown fields.
func leftEncoded(t *testing.T, msg *pdsv1.PortfolioMessage) *pdsv1.PortfolioMessage {
	t.Helper()
	out := &pdsv1.PortfolioMessage{}
	for _, ev := range msg.GetEvents() {
		encoded := &pdsv1.DeliveredEvent{AckId: ev.GetAckId(), DataType: ev.GetDataType(), Priority: ev.GetPriority(), DeliveryAttempt: ev.GetDeliveryAttempt()}
		if ev.GetEvent() != nil {
			event, err := proto.Marshal(ev.GetEvent())
			if err != nil {
				t.Fatalf("proto.Marshal(event): %v", err)
			}
			field := protowire.AppendBytes(protowire.AppendTag(nil, fieldDeliveredEvent, protowire.BytesType), event)
			encoded.ProtoReflect().SetUnknown(field)
		}
		out.Events = append(out.Events, encoded)
	}
	return out
}
