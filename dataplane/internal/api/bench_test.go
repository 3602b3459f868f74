package api_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// BenchmarkPublish measures Publish end to end (Connect over HTTP, validation, routing, durable storage in
// the embedded broker, latest views) with batches of 100 state events spread over 50 portfolios.
func BenchmarkPublish(b *testing.B) {
	benchPublish(b, pdsv1.PortfolioDataType_PORTFOLIO_STATE, stateTopic)
}
func BenchmarkPublishNoView(b *testing.B) {
	benchPublish(b, pdsv1.PortfolioDataType_REBALANCING, "portfolio/rebalancing/proposed")
}
func benchPublish(b *testing.B, dt pdsv1.PortfolioDataType, topic string) {
	h := newHarness(b)
	h.putTopic(topic, dt, 8, true)
	const batchSize = 100
	ctx := context.Background()
	b.ReportAllocs()
	// Many producers at once, as in production: the broker coalesces their records into shared writes.
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			events := make([]*pdsv1.PortfolioDistribution, batchSize)
			for i := range events {
				ev := specExampleEvent()
				ev.EventId, ev.DataType = "", dt
				ev.Data.PortfolioId = fmt.Sprintf("portfolio_%03d", i%50)
				events[i] = ev
			}
			if _, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events})); err != nil {
				b.Fatalf("publish: %v", err)
			}
		}
	})
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "events/s")
}
