package delivery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
)

const benchPartitions = 8

// publishForBench stores n events over 1,000 portfolios, outside the timed section.
func publishForBench(b *testing.B, h *harness, n int) {
	b.Helper()
	const batch = 1000
	events := make([]*pdsv1.PortfolioDistribution, 0, batch)
	for i := range n {
		events = append(events, stateEvent(fmt.Sprintf("P-%d", i%1000), float64(i)))
		if len(events) == batch || i == n-1 {
			h.publish(events...)
			events = events[:0]
		}
	}
}

// BenchmarkNextAcknowledge measures one stream draining a subscription through the delivery engine:
// Next, then Acknowledge of everything Next returned. Compare with BenchmarkBrokerConsumerBaseline,
// which drains the same records straight from a broker consumer, to see what the engine costs
// (decode, filter, ack-id bookkeeping) on top of the broker.
//
// encoded=true is a protobuf stream's session (StreamOptions.EncodedEvents), which leaves events encoded.
func BenchmarkNextAcknowledge(b *testing.B) {
	for _, maxInFlight := range []int{100, 1000} {
		for _, encoded := range []bool{false, true} {
			b.Run(fmt.Sprintf("max_in_flight=%d/encoded=%v", maxInFlight, encoded), func(b *testing.B) {
				benchmarkNextAcknowledge(b, delivery.StreamOptions{MaxInFlight: maxInFlight, EncodedEvents: encoded})
			})
		}
	}
}

func benchmarkNextAcknowledge(b *testing.B, opts delivery.StreamOptions) {
	h := newHarness(b, harnessOptions{partitions: benchPartitions, delivery: delivery.Options{AckDeadline: time.Minute}})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, opts)
	publishForBench(b, h, b.N)
	ctx := context.Background()

	b.ReportAllocs()
	b.ResetTimer()
	for received := 0; received < b.N; {
		nextCtx, cancel := context.WithTimeout(ctx, waitLimit)
		events, err := sess.Next(nextCtx)
		cancel()
		if err != nil {
			b.Fatalf("next after %d events: %v", received, err)
		}
		unknown, err := h.service.Acknowledge(ctx, tenant, sub.GetSubscriptionId(), ackIDs(events))
		if err != nil {
			b.Fatalf("acknowledge: %v", err)
		}
		if len(unknown) > 0 {
			b.Fatalf("acknowledge right after delivery: %d unknown ack ids, e.g. %s", len(unknown), unknown[0])
		}
		received += len(events)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBrokerConsumerBaseline is the baseline for BenchmarkNextAcknowledge: the same records, drained
// by a raw broker consumer with Receive and Ack.
func BenchmarkBrokerConsumerBaseline(b *testing.B) {
	for _, maxInFlight := range []int{100, 1000} {
		b.Run(fmt.Sprintf("max_in_flight=%d", maxInFlight), func(b *testing.B) {
			h := newHarness(b, harnessOptions{partitions: benchPartitions})
			sub := h.subscribe("reporting", nil)
			ctx := context.Background()
			consumer, err := h.broker.Subscribe(ctx, broker.SubscriptionRef{
				TenantID: tenant, ID: sub.GetId(), Topic: h.topicRef(),
			}, broker.ConsumerOptions{AckDeadline: time.Minute, MaxUnacked: maxInFlight})
			if err != nil {
				b.Fatalf("subscribe: %v", err)
			}
			b.Cleanup(func() { _ = consumer.Close() })
			publishForBench(b, h, b.N)

			b.ReportAllocs()
			b.ResetTimer()
			for received := 0; received < b.N; {
				deliveries, err := consumer.Receive(ctx, maxInFlight)
				if err != nil {
					b.Fatalf("receive after %d records: %v", received, err)
				}
				handles := make([]broker.AckHandle, len(deliveries))
				for i := range deliveries {
					handles[i] = deliveries[i].Handle
				}
				if err := consumer.Ack(ctx, handles...); err != nil {
					b.Fatalf("ack: %v", err)
				}
				received += len(deliveries)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkNextSelective measures a subscription that accepts 1 in 10 of its topic's events, as each of
// ten subscriptions of one topic does when every event is meant for one of them. ns/op is per event
// read from the broker (accepted or skipped).
func BenchmarkNextSelective(b *testing.B) {
	cases := []struct {
		name    string
		filters *pdsv1.SubscriptionFilters
		// targets gives event i its target workflows.
		targets func(i int) []string
	}{
		{name: "by target workflow", targets: func(i int) []string { return []string{fmt.Sprintf("workflow-%d", i%10)} }},
		{name: "by portfolio filter", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{"P-3", "P-13", "P-23"}},
			targets: func(int) []string { return nil }},
		{name: "by CEL filter", filters: &pdsv1.SubscriptionFilters{Cel: `event.data.portfolio_id.endsWith("3")`},
			targets: func(int) []string { return nil }},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, harnessOptions{partitions: benchPartitions, delivery: delivery.Options{AckDeadline: time.Minute}})
			sub := h.subscribe("workflow-3", bc.filters)
			sess := h.open(sub, delivery.StreamOptions{MaxInFlight: 1000})
			// Portfolios P-0 … P-29: those ending in 3 (P-3, P-13, P-23) are one in ten.
			const batch = 1000
			events := make([]*pdsv1.PortfolioDistribution, 0, batch)
			want := 0
			for i := range b.N {
				events = append(events, stateEvent(fmt.Sprintf("P-%d", i%30), float64(i), bc.targets(i)...))
				if i%10 == 3 {
					want++
				}
				if len(events) == batch || i == b.N-1 {
					h.publish(events...)
					events = events[:0]
				}
			}
			ctx := context.Background()

			b.ReportAllocs()
			b.ResetTimer()
			for received := 0; received < want; {
				nextCtx, cancel := context.WithTimeout(ctx, waitLimit)
				events, err := sess.Next(nextCtx)
				cancel()
				if err != nil {
					b.Fatalf("next after %d of %d events: %v", received, want, err)
				}
				if _, err := h.service.Acknowledge(ctx, tenant, sub.GetSubscriptionId(), ackIDs(events)); err != nil {
					b.Fatalf("acknowledge: %v", err)
				}
				received += len(events)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
