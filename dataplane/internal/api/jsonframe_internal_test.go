package api

import (
	"encoding/json"
	"reflect"
	"testing"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
)

// TestJSONEncoderWritesWhatJSONCodecWrites: JSON subscribers must see the same JSON value whichever
// encoder wrote it, including when several messages share one event.
func TestJSONEncoderWritesWhatJSONCodecWrites(t *testing.T) {
	t.Parallel()
	shared := &pdsv1.PortfolioDistributed{
		EventId:   "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		Timestamp: "2025-06-21T10:00:00.000Z",
		Distribution: &pdsv1.DistributionInfo{
			Topic: "portfolio/state/updated", RoutingKey: "portfolio_001.state.update",
			TargetWorkflows: []string{"reporting_analytics", "user_interface"},
		},
		Data: &pdsv1.PortfolioData{
			PortfolioId: "portfolio_001", TotalValue: 1000000,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.012, YtdReturn: 0.085},
			Details:            &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD", CashBalance: 25000}},
		},
	}
	bare := &pdsv1.PortfolioDistributed{EventId: "bare"}
	tests := []struct {
		name string
		msg  *pdsv1.PortfolioMessage
	}{
		{name: "no events", msg: &pdsv1.PortfolioMessage{}},
		{name: "one event", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{AckId: "kq3c5xnd7mv2pa4s6ebz.1a-0", Event: shared, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Priority: 5, DeliveryAttempt: 1},
		}}},
		{name: "auto-ack redelivery of a bare event", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{Event: bare, DeliveryAttempt: 3},
		}}},
		{name: "shared event twice, unknown data type, escaped ack id", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{
			{AckId: "a.1", Event: shared, DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT},
			{AckId: "a.\"2\"\\\n\x01é", Event: shared, DataType: 42, Priority: 9, DeliveryAttempt: 2},
		}}},
		{name: "event missing (falls back to protojson)", msg: &pdsv1.PortfolioMessage{Events: []*pdsv1.DeliveredEvent{{AckId: "a.1"}}}},
	}
	encoder := newJSONEncoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := jsoncodec.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("jsoncodec: %v", err)
			}
			// Twice: the second time the events come from the cache.
			for round := range 2 {
				got, err := encoder.appendMessage([]byte("prefix"), tt.msg)
				if err != nil {
					t.Fatalf("round %d: appendMessage: %v", round, err)
				}
				if string(got[:6]) != "prefix" {
					t.Fatalf("round %d: appendMessage overwrote dst: %q", round, got)
				}
				assertSameJSONValue(t, got[6:], want)
			}
		})
	}
}

func assertSameJSONValue(t *testing.T, got, want []byte) {
	t.Helper()
	var gotValue, wantValue any
	if err := json.Unmarshal(got, &gotValue); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal(want, &wantValue); err != nil {
		t.Fatalf("jsoncodec output is not JSON: %v\n%s", err, want)
	}
	if !reflect.DeepEqual(gotValue, wantValue) {
		t.Fatalf("JSON differs from jsoncodec's\n got: %s\nwant: %s", got, want)
	}
}
