package fastproto_test

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

func TestAppendWritesWhatProtoMarshalWrites(t *testing.T) {
	t.Parallel()
	messages := map[string]fastproto.Message{
		"empty event": &pdsv1.PortfolioDistribution{},
		"event with details": &pdsv1.PortfolioDistribution{
			EventId: "0190b0c4-7d1e-7000-8000-000000000001", Timestamp: "2025-06-21T10:00:00.000Z",
			DataType: pdsv1.PortfolioDataType_REBALANCING,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 1_250_000.5,
				PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: -0.012, YtdReturn: 0.08},
				Details: &pdsv1.PortfolioData_Rebalancing{Rebalancing: &pdsv1.RebalancingDetails{
					RebalanceId: "rb-1", Reason: "drift", Status: "PROPOSED",
					Trades: []*pdsv1.Trade{{InstrumentId: "AAPL", Side: "BUY", Quantity: 10, TargetWeight: 0.25}, {InstrumentId: "BND"}},
				}}},
			Routing: &pdsv1.RoutingInfo{Topic: "portfolio/rebalancing", RoutingKey: "portfolio_001:rebalancing",
				TargetWorkflows: []string{"risk", "ops"}, Priority: 7},
		},
		"publish response": &pdsv1.PublishResponse{Events: []*pdsv1.PublishedEvent{
			{EventId: "e1", Topic: "t", RoutingKey: "k", Partition: 3}, {EventId: "e2", Partition: 0},
		}},
	}
	for name, m := range messages {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := proto.Marshal(m.(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("prefix")
			got, err := fastproto.Append(bytes.Clone(prefix), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("Append wrote\n%x\nafter the prefix, proto.Marshal writes\n%x", got[len(prefix):], want)
			}
		})
	}
}

// A message without generated methods (here a well-known type) is encoded by proto.MarshalAppend.
func TestAppendMessageEncodesMessagesWithoutGeneratedMethods(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]proto.Message{
		"generated":  &pdsv1.PublishedEvent{EventId: "e1", Topic: "t", Partition: 3},
		"well-known": durationpb.New(1500 * time.Millisecond),
	} {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fastproto.AppendMessage([]byte("p"), m)
		if err != nil || !bytes.Equal(got, append([]byte("p"), want...)) {
			t.Errorf("%s: AppendMessage = %x, %v; want %x after the prefix", name, got, err, want)
		}
	}
}
