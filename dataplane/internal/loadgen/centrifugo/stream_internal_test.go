package centrifugo

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

func TestSeqFromJSONReadsTheEventID(t *testing.T) {
	distributed, err := jsoncodec.Marshal(routing.ToDistributed(&pdsv1.PortfolioDistribution{
		EventId: loadgen.EventIDFor(4711),
		Routing: &pdsv1.RoutingInfo{Topic: "portfolio/state/updated", RoutingKey: "pf-1.state.update"},
		Data:    &pdsv1.PortfolioData{PortfolioId: "pf-1"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    string
		want    uint64
		wantErr bool
	}{
		{name: "what jsoncodec writes", data: string(distributed), want: 4711},
		{name: "compact", data: `{"event_id":"load-7","timestamp":"t"}`, want: 7},
		{name: "spaces around the colon", data: `{"event_id" :  "load-8"}`, want: 8},
		{name: "escaped id falls back to a full decode", data: `{"event_id":"load-\u0039"}`, want: 9},
		{name: "event_id not first", data: `{"timestamp":"t","event_id":"load-10"}`, want: 10},
		{name: "no event_id", data: `{"timestamp":"t"}`, wantErr: true},
		{name: "not made by the load tool", data: `{"event_id":"0190-abc"}`, wantErr: true},
		{name: "not JSON", data: `event_id`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := seqFromJSON([]byte(tt.data))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("seqFromJSON(%s) = %d; want an error", tt.data, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("seqFromJSON(%s) = %d, %v; want %d", tt.data, got, err, tt.want)
			}
		})
	}
}

func TestChannelNamesKeepOnlyPlainCharacters(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "run-1_a.b", want: "run-1_a.b"},
		{name: "namespace, user and private marks", in: "$ns:chan#user", want: "_ns_chan_user"},
		{name: "space and slash", in: "run 1/x", want: "run_1_x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := channelSafe(tt.in); got != tt.want {
				t.Fatalf("channelSafe(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func testMessage(seq uint64) *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		EventId: loadgen.EventIDFor(seq), Timestamp: "2026-11-28T18:00:00.000Z",
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId: "pf-17", TotalValue: 1_250_000.5,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.0012, YtdReturn: 0.0841},
			Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
				Currency: "USD", CashBalance: 25_000,
				Positions: []*pdsv1.Position{
					{InstrumentId: "AAPL", Quantity: 1200, MarketValue: 250_000, Weight: 0.2},
					{InstrumentId: "MSFT", Quantity: 800, MarketValue: 300_000, Weight: 0.24},
					{InstrumentId: "US10Y", Quantity: 500, MarketValue: 450_000, Weight: 0.36},
				},
			}},
		},
		Routing: &pdsv1.RoutingInfo{Topic: "portfolio/state/updated", RoutingKey: "pf-17.state.update",
			TargetWorkflows: []string{"risk-engine"}, Priority: 3},
	}
}

func TestSeqFromProtobufReadsTheEventID(t *testing.T) {
	encoded, err := proto.Marshal(testMessage(4711))
	if err != nil {
		t.Fatal(err)
	}
	// event_id last: a decoder must skip the fields before it.
	reordered := protowire.AppendTag(nil, 5, protowire.BytesType)
	reordered = protowire.AppendBytes(reordered, []byte{0x0a, 0x01, 'x'})
	reordered = protowire.AppendTag(reordered, 3, protowire.VarintType)
	reordered = protowire.AppendVarint(reordered, 2)
	reordered = protowire.AppendTag(reordered, 1, protowire.BytesType)
	reordered = protowire.AppendString(reordered, loadgen.EventIDFor(12))
	tests := []struct {
		name    string
		data    []byte
		want    uint64
		wantErr bool
	}{
		{name: "what proto.Marshal writes", data: encoded, want: 4711},
		{name: "event_id after other fields", data: reordered, want: 12},
		{name: "no event_id", data: reordered[:len(reordered)-len(loadgen.EventIDFor(12))-2], wantErr: true},
		{name: "truncated", data: encoded[:3], wantErr: true},
		{name: "not made by the load tool", data: protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "0190-abc"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := seqFromProtobuf(tt.data)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("seqFromProtobuf(%x) = %d; want an error", tt.data, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("seqFromProtobuf(%x) = %d, %v; want %d", tt.data, got, err, tt.want)
			}
		})
	}
}

// BenchmarkBuildBatch is the load tool's own cost per event for this system, per payload: match, encode the
// event and append it to a batch request.
func BenchmarkBuildBatch(b *testing.B) {
	p := &plan{
		topology: loadgen.Topology{Subscriptions: []loadgen.SubscriptionSpec{
			{Workflow: "risk-engine", Streams: 1}, {Workflow: "rebalancer", Streams: 4},
		}},
		channels: [][]string{{"run.sub0.stream0"}, {"run.sub1.stream0", "run.sub1.stream1", "run.sub1.stream2", "run.sub1.stream3"}},
	}
	msg := testMessage(1)
	ev := loadgen.Event{RoutingKey: "pf-17.state.update", TargetWorkflows: []string{"risk-engine"}, Message: msg}
	for _, payload := range []Payload{PayloadProtobuf, PayloadJSON} {
		b.Run(payload.String(), func(b *testing.B) {
			var bt batch
			bt.start()
			b.ReportAllocs()
			for b.Loop() {
				bt.channels = p.channelsFor(bt.channels[:0], &ev)
				if err := bt.appendCommand(bt.channels, msg, payload); err != nil {
					b.Fatal(err)
				}
				if bt.body.Len() > maxBatchBody {
					bt.start()
				}
			}
		})
	}
}

func TestChannelsForPublishesEventsForEveryoneOnce(t *testing.T) {
	topology := loadgen.Topology{Subscriptions: []loadgen.SubscriptionSpec{
		{Workflow: "a", Streams: 1},
		{Workflow: "b", Streams: 1, Filter: &loadgen.Filter{MinPriority: 5}},
	}}
	shared := &plan{topology: topology, channels: [][]string{{"a0"}, {"b0"}}, everyone: "all"}
	perSubscription := &plan{topology: topology, channels: [][]string{{"a0"}, {"b0"}}}
	tests := []struct {
		name  string
		plan  *plan
		event loadgen.Event
		want  []string
	}{
		{name: "every subscription matches", plan: shared, event: loadgen.Event{Priority: 5}, want: []string{"all"}},
		{name: "the filter leaves one out", plan: shared, event: loadgen.Event{Priority: 4}, want: []string{"a0"}},
		{name: "targets one workflow", plan: shared, event: loadgen.Event{Priority: 9, TargetWorkflows: []string{"b"}}, want: []string{"b0"}},
		{name: "targets none of them", plan: shared, event: loadgen.Event{TargetWorkflows: []string{"c"}}, want: nil},
		{name: "without a shared channel", plan: perSubscription, event: loadgen.Event{Priority: 5}, want: []string{"a0", "b0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.plan.channelsFor(nil, &tt.event); !slices.Equal(got, tt.want) {
				t.Fatalf("channelsFor(%+v) = %v; want %v", tt.event, got, tt.want)
			}
		})
	}
}
