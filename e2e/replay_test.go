package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// A subscriber consumes and acknowledges events, then asks the data plane (ManageSubscription SEEK) to
// replay the subscription from the earliest stored event: the stream it keeps open receives the same
// events again. Runs on every broker the data plane offers; the Pulsar run needs PDS_TEST_PULSAR_URL.
func TestSeekToEarliestReplaysAcknowledgedEvents(t *testing.T) {
	t.Parallel()
	brokers := []struct {
		name  string
		setup func(t *testing.T) brokerSetup
	}{
		{"embedded", func(*testing.T) brokerSetup { return embeddedBroker }},
		{"pulsar", func(t *testing.T) brokerSetup { return pulsarBroker(pulsarFromEnv(t)) }},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			seekToEarliestReplaysAcknowledgedEvents(t, b.setup(t))
		})
	}
}

func seekToEarliestReplaysAcknowledgedEvents(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2)
	c.createSubscription("replay-state", stateTopic, "reporting_analytics")
	sub := openStream(t, c.stream, "replay-state", tl)

	const count = 12
	events := make([]*pdsv1.PortfolioDistribution, count)
	for i := range events {
		events[i] = portfolioEvent(fmt.Sprintf("portfolio_%03d", i%4), float64(2_000_000+i))
	}
	published := c.publish(events...)
	tl.expect(published)
	want := map[string]bool{}
	for _, ev := range published {
		want[ev.GetEventId()] = true
	}
	consumed := receiveAll(t, sub, want)
	c.acknowledge("replay-state", consumed...)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.stream.ManageSubscription(ctx, connect.NewRequest(&pdsv1.SubscriptionRequest{
		Action:       pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_SEEK,
		Subscription: &pdsv1.Subscription{SubscriptionId: "replay-state"},
		Seek:         &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Earliest{Earliest: true}},
	}))
	if err != nil {
		t.Fatalf("ManageSubscription SEEK to earliest: %v", err)
	}
	if got := resp.Msg.GetSubscription().GetSubscriptionId(); got != "replay-state" || resp.Msg.GetConfigVersion() == 0 {
		t.Fatalf("SEEK answered subscription %q at config version %d, want replay-state at the node's version", got, resp.Msg.GetConfigVersion())
	}

	// Every acknowledged event comes again on the stream that stayed open.
	replayed := receiveAll(t, sub, want)
	c.acknowledge("replay-state", replayed...)
	t.Logf("replayed=%d of %d acknowledged events after SEEK to earliest", len(replayed), len(consumed))
}

// receiveAll reads sub until every event id in want arrived at least once and returns the first delivery
// of each; events outside want fail the test.
func receiveAll(t *testing.T, sub *subscriber, want map[string]bool) []*pdsv1.DeliveredEvent {
	t.Helper()
	missing := maps.Clone(want)
	var got []*pdsv1.DeliveredEvent
	for len(missing) > 0 {
		ev := sub.next()
		id := ev.GetEvent().GetEventId()
		if !want[id] {
			t.Fatalf("subscription %q delivered unexpected event %q; still waiting for %v", sub.subscriptionID, id, slices.Sorted(maps.Keys(missing)))
		}
		if missing[id] {
			delete(missing, id)
			got = append(got, ev)
		}
	}
	return got
}
