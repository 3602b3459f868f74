package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
)

// BenchmarkPublish measures Publish end to end (Connect over HTTP/2, validation, routing, durable storage
// in the embedded broker, latest views) with batches of 100 state events spread over 50 portfolios, from
// protobuf and from JSON producers.
func BenchmarkPublish(b *testing.B) {
	benchPublish(b, pdsv1.PortfolioDataType_PORTFOLIO_STATE, stateTopic)
}

// BenchmarkPublishNoView publishes rebalancing events, which update no latest view.
func BenchmarkPublishNoView(b *testing.B) {
	benchPublish(b, pdsv1.PortfolioDataType_REBALANCING, "portfolio/rebalancing/proposed")
}

func benchPublish(b *testing.B, dt pdsv1.PortfolioDataType, topic string) {
	codecs := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "proto"},
		{name: "json", opts: []connect.ClientOption{connect.WithCodec(jsoncodec.Codec())}},
	}
	for _, codec := range codecs {
		b.Run("codec="+codec.name, func(b *testing.B) {
			h := newHarnessWith(b, harnessOptions{h2c: true})
			h.putTopic(topic, dt, 8, true)
			client := pdsv1connect.NewPortfolioStreamClient(h.h2cClient, h.url, codec.opts...)
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
					if _, err := client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events})); err != nil {
						b.Fatalf("publish: %v", err)
					}
				}
			})
			b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// publishBenchEvents stores n state events over 1,000 portfolios through Publish, outside the timed section.
func publishBenchEvents(b *testing.B, h *harness, n int) {
	b.Helper()
	ctx := context.Background()
	const batch = 1000
	events := make([]*pdsv1.PortfolioDistribution, 0, batch)
	for i := range n {
		ev := specExampleEvent()
		ev.EventId = ""
		ev.Data.PortfolioId = fmt.Sprintf("portfolio_%04d", i%1000)
		ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD", CashBalance: 25000}}
		events = append(events, ev)
		if len(events) == batch || i == n-1 {
			if _, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events})); err != nil {
				b.Fatalf("publish: %v", err)
			}
			events = events[:0]
		}
	}
}

// BenchmarkStreamPortfolio measures StreamPortfolio end to end over HTTP/2 (h2c, as the data-plane binary
// serves it): stored events read from the embedded broker by a delivery session, encoded, sent and
// decoded by a Connect client, with auto_ack so the client never waits on an Acknowledge round trip.
// max_in_flight bounds the events per PortfolioMessage, so batch=1 sends one event per message. allocs/op
// counts both ends (and the broker) per event.
func BenchmarkStreamPortfolio(b *testing.B) {
	codecs := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "proto"},
		{name: "json", opts: []connect.ClientOption{connect.WithCodec(jsoncodec.Codec())}},
	}
	for _, codec := range codecs {
		for _, batch := range []int32{1, 100} {
			b.Run(fmt.Sprintf("codec=%s/batch=%d", codec.name, batch), func(b *testing.B) {
				h := newHarnessWith(b, harnessOptions{h2c: true})
				h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 8, true)
				h.putSubscription("bench-stream", stateTopic, "reporting_analytics", "active")
				publishBenchEvents(b, h, b.N)
				client := pdsv1connect.NewPortfolioStreamClient(h.h2cClient, h.url, codec.opts...)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()

				b.ReportAllocs()
				b.ResetTimer()
				stream, err := client.StreamPortfolio(ctx, connect.NewRequest(&pdsv1.StreamRequest{
					SubscriptionId: "bench-stream", MaxInFlight: batch, AutoAck: true,
				}))
				if err != nil {
					b.Fatalf("open stream: %v", err)
				}
				messages := 0
				for received := 0; received < b.N; messages++ {
					if !stream.Receive() {
						b.Fatalf("stream ended after %d of %d events: %v", received, b.N, stream.Err())
					}
					received += len(stream.Msg().GetEvents())
				}
				b.StopTimer()
				_ = stream.Close()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(b.N)/float64(max(messages, 1)), "events/msg")
			})
		}
	}
}

// BenchmarkWebSocketFanOut measures N WebSocket subscribers (N subscriptions of one topic, auto_ack) that
// each receive every event: the JSON a subscriber gets is the same for all N apart from its ack ids, so
// this shows what encoding per subscriber costs. deliveries/s counts events times subscribers.
func BenchmarkWebSocketFanOut(b *testing.B) {
	for _, subscribers := range []int{1, 10} {
		b.Run(fmt.Sprintf("subscribers=%d", subscribers), func(b *testing.B) {
			h := newHarness(b)
			h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 8, true)
			for i := range subscribers {
				h.putSubscription(fmt.Sprintf("bench-ws-%d", i), stateTopic, "reporting_analytics", "active")
			}
			publishBenchEvents(b, h, b.N)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			b.ReportAllocs()
			b.ResetTimer()
			errs := make(chan error, subscribers)
			for i := range subscribers {
				go func() { errs <- receiveOverWebSocket(ctx, h, fmt.Sprintf("bench-ws-%d", i), b.N) }()
			}
			for range subscribers {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*subscribers)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// receiveOverWebSocket reads n events of the subscription from the WebSocket endpoint with auto_ack.
func receiveOverWebSocket(ctx context.Context, h *harness, subscriptionID string, n int) error {
	wsURL := "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/ws?auto_ack=true&max_in_flight=100&subscription_id=" + subscriptionID
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		return fmt.Errorf("dial %s: %w", subscriptionID, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(-1)
	for received := 0; received < n; {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("%s: read after %d of %d events: %w", subscriptionID, received, n, err)
		}
		// A lean client: only the server's cost should show.
		var msg struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(data, &msg); err != nil {
			return fmt.Errorf("%s: decode frame: %w", subscriptionID, err)
		}
		received += len(msg.Events)
	}
	return nil
}
