package api_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"google.golang.org/protobuf/proto"
)

// TestEverySubscriberOfAnEventGetsItWhateverItsProtocol: the data plane encodes an event once for all of
// its subscribers, so subscribers on different protocols and codecs, reading one event, must each still
// get exactly that event.
func TestEverySubscriberOfAnEventGetsItWhateverItsProtocol(t *testing.T) {
	t.Parallel()
	h := newHarnessWith(t, harnessOptions{h2c: true})
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2, true)
	clients := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "connect proto"},
		{name: "connect json", opts: []connect.ClientOption{connect.WithCodec(jsoncodec.Codec())}},
		{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}},
		{name: "grpc-web json", opts: []connect.ClientOption{connect.WithGRPCWeb(), connect.WithCodec(jsoncodec.Codec())}},
	}
	for _, c := range clients {
		h.putSubscription("sub-"+c.name, stateTopic, "reporting_analytics", "active")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	first, second := specExampleEvent(), specExampleEvent()
	first.EventId, second.EventId = "event-1", "event-2"
	second.Data.PortfolioId = "portfolio_002"
	// Details, which the protobuf decoder of Publish keeps encoded, must arrive whole.
	for _, ev := range []*pdsv1.PortfolioDistribution{first, second} {
		ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
			Currency: "USD", CashBalance: 25_000, Positions: []*pdsv1.Position{
				{InstrumentId: "AAPL", Quantity: 100, MarketValue: 19_000, Weight: 0.019},
				{InstrumentId: "BND", Quantity: 10, MarketValue: 940, Weight: 0.001},
			}}}
	}
	// One event from a JSON producer, one from a protobuf producer: the two decoders of Publish.
	h.publish(ctx, first)
	protoProducer := pdsv1connect.NewPortfolioStreamClient(h.h2cClient, h.url)
	if _, err := protoProducer.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{second}})); err != nil {
		t.Fatalf("publish over protobuf: %v", err)
	}
	want := map[string]*pdsv1.PortfolioDistribution{"event-1": first, "event-2": second}

	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			client := pdsv1connect.NewPortfolioStreamClient(h.h2cClient, h.url, c.opts...)
			stream, err := client.StreamPortfolio(ctx, connect.NewRequest(&pdsv1.StreamRequest{SubscriptionId: "sub-" + c.name, AutoAck: true}))
			if err != nil {
				t.Fatalf("open stream: %v", err)
			}
			t.Cleanup(func() { _ = stream.Close() })
			for _, got := range receiveEvents(t, stream, 2) {
				published, ok := want[got.GetEvent().GetEventId()]
				if !ok {
					t.Fatalf("received unknown event %v", got.GetEvent())
				}
				if !proto.Equal(got.GetEvent().GetData(), published.GetData()) || got.GetDataType() != published.GetDataType() ||
					got.GetDeliveryAttempt() != 1 || got.GetEvent().GetDistribution().GetRoutingKey() != published.GetData().GetPortfolioId()+".state.update" {
					t.Fatalf("received %v, published %v", got, published)
				}
			}
		})
	}
}
