package eventwire_test

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/eventwire"
	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// maxEvents is the most events a request is decoded with, as Publish takes.
const maxEvents = 1000

// sampleEvents has one event of each data type, as producers send them (event_id and timestamp set on
// some), plus an event without data and one without routing.
func sampleEvents() []*pdsv1.PortfolioDistribution {
	metrics := &pdsv1.PerformanceMetricsData{DailyReturn: 0.0012, YtdReturn: -0.034}
	routing := func(targets ...string) *pdsv1.RoutingInfo {
		return &pdsv1.RoutingInfo{TargetWorkflows: targets, Priority: 3}
	}
	return []*pdsv1.PortfolioDistribution{
		{EventId: "evt-1", Timestamp: "2025-06-21T10:00:00.000Z", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 1_000_000, PerformanceMetrics: metrics,
				Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
					Currency: "USD", CashBalance: 25_000, Positions: []*pdsv1.Position{
						{InstrumentId: "AAPL", Quantity: 100, MarketValue: 19_000, Weight: 0.019},
						{InstrumentId: "US912828ZT05", Quantity: 1000, MarketValue: 940_000, Weight: 0.94},
					}}}},
			Routing: routing("reporting_analytics", "user_interface")},
		{DataType: pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_002", TotalValue: 2_000_000,
				Details: &pdsv1.PortfolioData_PerformanceAttribution{PerformanceAttribution: &pdsv1.PerformanceAttributionDetails{
					BenchmarkId: "MSCI_ACWI", PeriodStart: "2025-01-01", PeriodEnd: "2025-06-21", ActiveReturn: 0.004,
					Effects: []*pdsv1.AttributionEffect{{Segment: "technology", AllocationEffect: 0.001, SelectionEffect: -0.002}},
				}}},
			Routing: &pdsv1.RoutingInfo{Topic: "portfolio/attribution/calculated", RoutingKey: "portfolio_002.attribution.update",
				TargetWorkflows: []string{"reporting_analytics"}, Priority: 9}},
		{DataType: pdsv1.PortfolioDataType_REBALANCING,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_003",
				Details: &pdsv1.PortfolioData_Rebalancing{Rebalancing: &pdsv1.RebalancingDetails{
					RebalanceId: "rb-1", Reason: "drift beyond the 5% tolerance band", Status: "proposed",
					Trades: []*pdsv1.Trade{{InstrumentId: "AAPL", Side: "BUY", Quantity: 10, TargetWeight: 0.25}},
				}}},
			Routing: routing("trade_execution")},
		{DataType: pdsv1.PortfolioDataType_RISK_BUDGET,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_004", PerformanceMetrics: &pdsv1.PerformanceMetricsData{},
				Details: &pdsv1.PortfolioData_RiskBudget{RiskBudget: &pdsv1.RiskBudgetDetails{
					TotalRiskBudget: 0.12, Utilized: 0.07, ValueAtRisk_95: 16_500,
					Allocations: []*pdsv1.RiskAllocation{{Factor: "equity", Budget: 0.06, Utilization: 0.8}},
				}}},
			Routing: routing()},
		{DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT,
			Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_005",
				Details: &pdsv1.PortfolioData_CashManagement{CashManagement: &pdsv1.CashManagementDetails{}}},
			Routing: routing("treasury")},
		{DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Routing: routing()},
		{DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_007"}},
		{},
	}
}

func encodeRequest(t testing.TB, events []*pdsv1.PortfolioDistribution) []byte {
	t.Helper()
	data, err := proto.Marshal(&pdsv1.PublishRequest{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The decoded events encode to exactly the bytes the producer sent for each, and equal what the generated
// decoder makes of them once their details are decoded too.
func TestDecodedEventsEncodeAsSent(t *testing.T) {
	t.Parallel()
	events := sampleEvents()
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, encodeRequest(t, events), maxEvents); err != nil {
		t.Fatal(err)
	}
	if len(req.Events) != len(events) {
		t.Fatalf("decoded %d events, sent %d", len(req.Events), len(events))
	}
	for i, ev := range req.Events {
		want, err := proto.Marshal(events[i])
		if err != nil {
			t.Fatal(err)
		}
		got, err := fastproto.Append(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("event %d encodes as\n%x\nsent\n%x", i, got, want)
		}
		full := &pdsv1.PortfolioDistribution{}
		if err := full.UnmarshalVT(got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(full, events[i]) {
			t.Errorf("event %d decodes as %v, sent %v", i, full, events[i])
		}
		if ev.GetData().GetDetails() != nil {
			t.Errorf("event %d: details were decoded: %v", i, ev.GetData().GetDetails())
		}
	}
}

// The fields the publish path reads are decoded; the details are found where the decoder left them.
func TestDecodeKeepsDetailsEncoded(t *testing.T) {
	t.Parallel()
	events := sampleEvents()
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, encodeRequest(t, events), maxEvents); err != nil {
		t.Fatal(err)
	}
	got, want := req.Events[1], events[1]
	if got.GetDataType() != want.GetDataType() || got.GetData().GetPortfolioId() != want.GetData().GetPortfolioId() ||
		got.GetData().GetTotalValue() != want.GetData().GetTotalValue() || !proto.Equal(got.GetRouting(), want.GetRouting()) {
		t.Fatalf("decoded %v, sent %v", got, want)
	}
	member, field := eventwire.Details(got.GetData())
	if member == nil || member.Name() != "performance_attribution" {
		t.Fatalf("Details found member %v", member)
	}
	full := &pdsv1.PortfolioData{}
	if err := full.UnmarshalVT(field); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(full.GetPerformanceAttribution(), want.GetData().GetPerformanceAttribution()) {
		t.Fatalf("the details field decodes as %v, sent %v", full, want.GetData().GetDetails())
	}
	if valid, err := eventwire.CheckDetails(member, field); !valid || err != nil {
		t.Fatalf("CheckDetails = %v, %v for valid details", valid, err)
	}
	if member, _ := eventwire.Details(req.Events[5].GetData()); member != nil {
		t.Fatalf("an event without data has details %v", member)
	}
}

// Fields unknown to this build, at every level the decoder handles, are kept and encoded again in place.
func TestDecodeKeepsUnknownFields(t *testing.T) {
	t.Parallel()
	unknown := protowire.AppendString(protowire.AppendTag(nil, 99, protowire.BytesType), "from a newer producer")
	ev := sampleEvents()[0]
	ev.Routing.ProtoReflect().SetUnknown(unknown)
	ev.Data.ProtoReflect().SetUnknown(unknown)
	ev.Data.GetPortfolioState().ProtoReflect().SetUnknown(unknown)
	ev.ProtoReflect().SetUnknown(unknown)
	want, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, encodeRequest(t, []*pdsv1.PortfolioDistribution{ev}), maxEvents); err != nil {
		t.Fatal(err)
	}
	got, err := fastproto.Append(nil, req.Events[0])
	if err != nil {
		t.Fatal(err)
	}
	// The details come after the data's unknown field here, as in the producer's encoding: the bytes are
	// the same, though field order differs from what a full decode would write.
	full, fullWant := &pdsv1.PortfolioDistribution{}, &pdsv1.PortfolioDistribution{}
	if err := full.UnmarshalVT(got); err != nil {
		t.Fatal(err)
	}
	if err := fullWant.UnmarshalVT(want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(full, fullWant) || len(got) != len(want) {
		t.Fatalf("encoded again as %x, sent %x", got, want)
	}
	if member, _ := eventwire.Details(req.Events[0].GetData()); member == nil || member.Name() != "portfolio_state" {
		t.Fatalf("Details found %v among unknown fields", member)
	}
}

// A data field that appears twice merges as protobuf says; with two details fields the event is decoded
// whole, so the last details member wins.
func TestDecodeMergesRepeatedMessages(t *testing.T) {
	t.Parallel()
	first := &pdsv1.PortfolioDistribution{DataType: pdsv1.PortfolioDataType_REBALANCING,
		Data: &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 5,
			Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD"}}},
		Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"a"}, Priority: 1}}
	second := &pdsv1.PortfolioDistribution{
		Data:    &pdsv1.PortfolioData{PortfolioId: "portfolio_002"},
		Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"b"}}}
	third := &pdsv1.PortfolioDistribution{
		Data: &pdsv1.PortfolioData{Details: &pdsv1.PortfolioData_Rebalancing{Rebalancing: &pdsv1.RebalancingDetails{Status: "proposed"}}}}
	var joined []byte
	for _, part := range []*pdsv1.PortfolioDistribution{first, second, third} {
		b, err := proto.Marshal(part)
		if err != nil {
			t.Fatal(err)
		}
		joined = append(joined, b...)
	}
	for name, parts := range map[string][]byte{"two parts": joined[:len(joined)-proto.Size(third)], "three parts": joined} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := &pdsv1.PortfolioDistribution{}
			if err := proto.Unmarshal(parts, want); err != nil {
				t.Fatal(err)
			}
			request := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), parts)
			var req pdsv1.PublishRequest
			if err := eventwire.DecodePublishRequest(&req, request, maxEvents); err != nil {
				t.Fatal(err)
			}
			encoded, err := fastproto.Append(nil, req.Events[0])
			if err != nil {
				t.Fatal(err)
			}
			got := &pdsv1.PortfolioDistribution{}
			if err := proto.Unmarshal(encoded, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded as %v, protobuf says %v", got, want)
			}
		})
	}
}

// A request of more events than the caller takes is counted, not decoded.
func TestDecodeOnlyCountsTooManyEvents(t *testing.T) {
	t.Parallel()
	events := sampleEvents()
	data := encodeRequest(t, events)
	var req pdsv1.PublishRequest
	if err := eventwire.DecodePublishRequest(&req, data, len(events)-1); err != nil {
		t.Fatal(err)
	}
	if len(req.Events) != len(events) {
		t.Fatalf("%d events, want %d", len(req.Events), len(events))
	}
	for i, ev := range req.Events {
		if ev != nil {
			t.Fatalf("event %d was decoded: %v", i, ev)
		}
	}
	if err := eventwire.DecodePublishRequest(&req, data[:len(data)-3], len(events)-1); err == nil {
		t.Fatal("a truncated request of too many events decoded without an error")
	}
}

// What the generated decoder rejects, DecodePublishRequest rejects.
func TestDecodeRejectsWhatProtobufRejects(t *testing.T) {
	t.Parallel()
	valid := encodeRequest(t, sampleEvents()[:1])
	event := func(fields ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), bytes.Join(fields, nil))
	}
	for name, data := range map[string][]byte{
		"truncated":                 valid[:len(valid)-3],
		"events as a number":        protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3),
		"event_id as a number":      event(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3)),
		"data_type as text":         event(protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "x")),
		"total_value as a varint":   event(protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1))),
		"priority as text":          event(protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), "x"))),
		"details as a number":       event(protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), protowire.AppendVarint(protowire.AppendTag(nil, 10, protowire.VarintType), 1))),
		"field number zero":         event(protowire.AppendVarint(protowire.AppendTag(nil, 0, protowire.VarintType), 1)),
		"data longer than an event": event(protowire.AppendTag(nil, 4, protowire.BytesType), protowire.AppendVarint(nil, 50)),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := new(pdsv1.PublishRequest).UnmarshalVT(data); err == nil {
				t.Fatalf("the generated decoder accepts %x; the case is wrong", data)
			}
			if err := eventwire.DecodePublishRequest(new(pdsv1.PublishRequest), data, maxEvents); err == nil {
				t.Fatalf("decoded %x", data)
			}
		})
	}
}

func TestCheckDetailsFindsBadValuesAndEncodings(t *testing.T) {
	t.Parallel()
	badUTF8 := string([]byte{0xff, 'x'})
	for name, tc := range map[string]struct {
		details *pdsv1.PortfolioData
		valid   bool
	}{
		"valid": {&pdsv1.PortfolioData{Details: &pdsv1.PortfolioData_CashManagement{CashManagement: &pdsv1.CashManagementDetails{
			Currency: "EUR", Flows: []*pdsv1.CashFlow{{Date: "2025-01-02", Amount: -5}}}}}, true},
		"NaN in a list's message": {&pdsv1.PortfolioData{Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
			Positions: []*pdsv1.Position{{InstrumentId: "A"}, {Weight: math.NaN()}}}}}, false},
		"infinity": {&pdsv1.PortfolioData{Details: &pdsv1.PortfolioData_RiskBudget{RiskBudget: &pdsv1.RiskBudgetDetails{
			Utilized: math.Inf(-1)}}}, false},
		"bad UTF-8": {&pdsv1.PortfolioData{Details: &pdsv1.PortfolioData_Rebalancing{Rebalancing: &pdsv1.RebalancingDetails{
			Trades: []*pdsv1.Trade{{Side: badUTF8}}}}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// UnmarshalVT, like the decoder of requests, takes strings without checking them.
			encoded, err := tc.details.MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			request := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType),
				protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), encoded))
			var req pdsv1.PublishRequest
			if err := eventwire.DecodePublishRequest(&req, request, maxEvents); err != nil {
				t.Fatal(err)
			}
			member, field := eventwire.Details(req.Events[0].GetData())
			if member == nil {
				t.Fatal("no details found")
			}
			if valid, err := eventwire.CheckDetails(member, field); valid != tc.valid || err != nil {
				t.Fatalf("CheckDetails = %v, %v; want %v, nil", valid, err, tc.valid)
			}
		})
	}

	if member, _ := eventwire.Details(&pdsv1.PortfolioData{}); member != nil {
		t.Fatal("found details in an empty PortfolioData")
	}
	// Details the generated decoder cannot decode are an error, not just invalid.
	positionField := func(position []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), position)
	}
	for name, state := range map[string][]byte{
		"a string where a double belongs":   positionField(protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "not a double")),
		"a double cut short":                positionField(append(protowire.AppendTag(nil, 2, protowire.Fixed64Type), 1, 2, 3)),
		"a position longer than its state":  append(protowire.AppendTag(nil, 3, protowire.BytesType), 9, 1),
		"a string longer than its position": positionField(append(protowire.AppendTag(nil, 1, protowire.BytesType), 200, 1, 'A')),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			field := protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), state)
			if err := new(pdsv1.PortfolioData).UnmarshalVT(field); err == nil {
				t.Fatal("the generated decoder accepts the malformed details; the case is wrong")
			}
			data := &pdsv1.PortfolioData{}
			data.ProtoReflect().SetUnknown(field)
			member, found := eventwire.Details(data)
			if member == nil || !bytes.Equal(found, field) {
				t.Fatalf("Details = %v, %x", member, found)
			}
			if valid, err := eventwire.CheckDetails(member, found); valid || err == nil {
				t.Fatalf("CheckDetails = %v, %v", valid, err)
			}
		})
	}
}

// BenchmarkDecodePublishRequest decodes a request of 64 events (all data types in turn) and encodes each
// event again, as Publish does: with the generated decoder and with DecodePublishRequest.
func BenchmarkDecodePublishRequest(b *testing.B) {
	samples := sampleEvents()[:5]
	events := make([]*pdsv1.PortfolioDistribution, 64)
	for i := range events {
		ev := proto.Clone(samples[i%len(samples)]).(*pdsv1.PortfolioDistribution)
		ev.Data.PortfolioId = fmt.Sprintf("portfolio_%03d", i)
		events[i] = ev
	}
	data := encodeRequest(b, events)
	decoders := map[string]func(*pdsv1.PublishRequest, []byte) error{
		"decoder=generated": func(req *pdsv1.PublishRequest, data []byte) error { return req.UnmarshalVT(data) },
		"decoder=eventwire": func(req *pdsv1.PublishRequest, data []byte) error {
			return eventwire.DecodePublishRequest(req, data, maxEvents)
		},
	}
	for _, name := range []string{"decoder=generated", "decoder=eventwire"} {
		decode := decoders[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var encoded []byte
			for b.Loop() {
				var req pdsv1.PublishRequest
				if err := decode(&req, data); err != nil {
					b.Fatal(err)
				}
				encoded = encoded[:0]
				for _, ev := range req.Events {
					var err error
					if encoded, err = fastproto.Append(encoded, ev); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
		})
	}
}
