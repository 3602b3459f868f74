package routing_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// BenchmarkNormalize measures validation plus defaults (UUIDv7, timestamp, topic, routing key) of a
// typical state event with three positions, as Publish does for every event.
func BenchmarkNormalize(b *testing.B) {
	template := validEvent()
	template.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
		Currency: "USD", CashBalance: 25000,
		Positions: []*pdsv1.Position{
			{InstrumentId: "AAPL", Quantity: 100, MarketValue: 19000, Weight: 0.019},
			{InstrumentId: "MSFT", Quantity: 50, MarketValue: 21000, Weight: 0.021},
			{InstrumentId: "US912828ZT05", Quantity: 1000, MarketValue: 940000, Weight: 0.94},
		},
	}}
	for _, form := range []string{"decoded", "encoded"} {
		b.Run("details="+form, func(b *testing.B) {
			ev := template
			if form == "encoded" {
				// As Publish's protobuf decoder leaves it (eventwire).
				ev = publishedOverTheWire(b, proto.Clone(template).(*pdsv1.PortfolioDistribution))
			}
			now := time.Now()
			routingInfo := &pdsv1.RoutingInfo{}
			b.ReportAllocs()
			for b.Loop() {
				// Reset the defaults Normalize fills so every iteration does the full work.
				*routingInfo = pdsv1.RoutingInfo{TargetWorkflows: template.Routing.TargetWorkflows, Priority: 5}
				ev.EventId, ev.Timestamp, ev.Routing = "", "", routingInfo
				if err := routing.Normalize(ev, "events[0]", now); err != nil {
					b.Fatal(err)
				}
			}
			// After the loop: b.Loop resets user metrics when it starts timing.
			b.ReportMetric(float64(proto.Size(ev)), "proto-bytes")
		})
	}
}

func BenchmarkPartition(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("portfolio_%05d.state.update", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = routing.Partition(keys[i&1023], 16)
		i++
	}
}

// BenchmarkNormalizeGivenTimestamp is BenchmarkNormalize for a producer that sets the timestamp itself,
// already in TimestampLayout.
func BenchmarkNormalizeGivenTimestamp(b *testing.B) {
	template := validEvent()
	now := time.Now()
	routingInfo := &pdsv1.RoutingInfo{}
	b.ReportAllocs()
	for b.Loop() {
		*routingInfo = pdsv1.RoutingInfo{TargetWorkflows: template.Routing.TargetWorkflows, Priority: 5}
		template.EventId, template.Timestamp, template.Routing = "", "2025-06-21T10:00:00.000Z", routingInfo
		if err := routing.Normalize(template, "events[0]", now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizeAllGiven is BenchmarkNormalize for a producer that sets every default itself (event
// id, timestamp, topic, routing key), as the load tool does: nothing is filled in, everything is checked.
func BenchmarkNormalizeAllGiven(b *testing.B) {
	template := validEvent()
	template.EventId = "0190b0c4-7d1e-7000-8000-00000000002a"
	template.Timestamp = "2025-06-21T10:00:00.000Z"
	template.Routing.Topic = "load-route-20261129T081500Z"
	template.Routing.RoutingKey = "portfolio_001.state.update"
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := routing.Normalize(template, "events[0]", now); err != nil {
			b.Fatal(err)
		}
	}
}
