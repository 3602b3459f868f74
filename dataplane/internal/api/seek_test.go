package api_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/dataplane/internal/api"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
)

// seek asks the data plane to move subscriptionID to pos.
func (h *harness) seek(ctx context.Context, subscriptionID string, pos *pdsv1.SeekPosition) (*pdsv1.SubscriptionResponse, error) {
	resp, err := h.client.ManageSubscription(ctx, connect.NewRequest(&pdsv1.SubscriptionRequest{
		Action:       pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_SEEK,
		Subscription: &pdsv1.Subscription{SubscriptionId: subscriptionID},
		Seek:         pos,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// mustSeek moves the subscription and checks the answer names it at the node's config version.
func (h *harness) mustSeek(ctx context.Context, subscriptionID string, pos *pdsv1.SeekPosition) {
	h.t.Helper()
	resp, err := h.seek(ctx, subscriptionID, pos)
	if err != nil {
		h.t.Fatalf("SEEK %q to %v: %v", subscriptionID, pos, err)
	}
	if got := resp.GetSubscription().GetSubscriptionId(); got != subscriptionID {
		h.t.Fatalf("SEEK answered with subscription %q, want %q", got, subscriptionID)
	}
	if got, want := resp.GetConfigVersion(), h.fsm.Current().Version; got != want {
		h.t.Fatalf("SEEK answered config version %d, want the node's %d", got, want)
	}
}

func (h *harness) acknowledge(ctx context.Context, subscriptionID string, events []*pdsv1.DeliveredEvent) {
	h.t.Helper()
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetAckId()
	}
	resp, err := h.client.Acknowledge(ctx, connect.NewRequest(&pdsv1.AcknowledgeRequest{SubscriptionId: subscriptionID, AckIds: ids}))
	if err != nil {
		h.t.Fatalf("acknowledge %d events: %v", len(ids), err)
	}
	if unknown := resp.Msg.GetUnknownAckIds(); len(unknown) > 0 {
		h.t.Fatalf("acknowledge: ack ids %q unknown", unknown)
	}
}

// portfolioEvents are n state events of distinct portfolios with event ids prefix-0 … prefix-(n-1).
func portfolioEvents(prefix string, n int) []*pdsv1.PortfolioDistribution {
	events := make([]*pdsv1.PortfolioDistribution, n)
	for i := range events {
		ev := specExampleEvent()
		ev.EventId = fmt.Sprintf("%s-%d", prefix, i)
		ev.Data.PortfolioId = fmt.Sprintf("portfolio_%03d", i)
		events[i] = ev
	}
	return events
}

func eventIDsOf[T interface{ GetEventId() string }](events []T) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetEventId()
	}
	slices.Sort(ids)
	return ids
}

func deliveredIDs(events []*pdsv1.DeliveredEvent) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetEvent().GetEventId()
	}
	slices.Sort(ids)
	return ids
}

func TestSeekToEarliestRedeliversAcknowledgedEventsToTheOpenStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 3, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	events := portfolioEvents("replay", 12)
	h.publish(ctx, events...)
	first := receiveEvents(t, stream, len(events))
	h.acknowledge(ctx, "reporting", first)

	h.mustSeek(ctx, "reporting", &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Earliest{Earliest: true}})
	again := receiveEvents(t, stream, len(events))
	if got, want := deliveredIDs(again), eventIDsOf(events); !slices.Equal(got, want) {
		t.Fatalf("after SEEK to earliest the stream delivered %q, want the acknowledged events %q again", got, want)
	}
	h.acknowledge(ctx, "reporting", again)
}

func TestSeekToLatestSkipsTheBacklog(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// One partition: a backlog event would arrive before the fresh ones.
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h.publish(ctx, portfolioEvents("backlog", 8)...)

	h.mustSeek(ctx, "reporting", &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Latest{Latest: true}})
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	fresh := portfolioEvents("fresh", 3)
	h.publish(ctx, fresh...)
	if got, want := deliveredIDs(receiveEvents(t, stream, len(fresh))), eventIDsOf(fresh); !slices.Equal(got, want) {
		t.Fatalf("after SEEK to latest the stream delivered %q, want only the events published afterwards %q", got, want)
	}
}

func TestSeekToATimeReplaysWhatWasPublishedFromThen(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	before := portfolioEvents("before", 4)
	h.publish(ctx, before...)
	// The seek time lies strictly between the two publishes; the clock is what is waited for.
	time.Sleep(time.Until(time.Now().Add(3 * time.Millisecond)))
	at := time.Now()
	time.Sleep(time.Until(at.Add(3 * time.Millisecond)))
	since := portfolioEvents("since", 4)
	h.publish(ctx, since...)
	h.acknowledge(ctx, "reporting", receiveEvents(t, stream, len(before)+len(since)))

	h.mustSeek(ctx, "reporting", &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Timestamp{Timestamp: at.UTC().Format(time.RFC3339Nano)}})
	if got, want := deliveredIDs(receiveEvents(t, stream, len(since))), eventIDsOf(since); !slices.Equal(got, want) {
		t.Fatalf("after SEEK to %s the stream delivered %q, want the events published from then %q", at.Format(time.RFC3339Nano), got, want)
	}
}

func TestSeekRefusesWhatItCannotDo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	h.putSubscription("orphan", "portfolio/state/never-created", "reporting_analytics", "active")
	earliest := &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Earliest{Earliest: true}}

	tests := []struct {
		name           string
		subscriptionID string
		pos            *pdsv1.SeekPosition
		wantCode       connect.Code
		wantFields     []string
	}{
		{name: "no subscription id", pos: earliest, wantCode: connect.CodeInvalidArgument, wantFields: []string{"subscription.subscription_id"}},
		{name: "no position", subscriptionID: "reporting", wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek"}},
		{name: "empty position", subscriptionID: "reporting", pos: &pdsv1.SeekPosition{}, wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek"}},
		{name: "earliest set to false", subscriptionID: "reporting", pos: &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Earliest{}},
			wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek.earliest"}},
		{name: "latest set to false", subscriptionID: "reporting", pos: &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Latest{}},
			wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek.latest"}},
		{name: "timestamp that is not RFC 3339", subscriptionID: "reporting", pos: &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Timestamp{Timestamp: "yesterday"}},
			wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek.timestamp"}},
		{name: "empty timestamp", subscriptionID: "reporting", pos: &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Timestamp{}},
			wantCode: connect.CodeInvalidArgument, wantFields: []string{"seek.timestamp"}},
		{name: "every field wrong at once", pos: &pdsv1.SeekPosition{}, wantCode: connect.CodeInvalidArgument,
			wantFields: []string{"seek", "subscription.subscription_id"}},
		{name: "unknown subscription", subscriptionID: "nobody", pos: earliest, wantCode: connect.CodeNotFound},
		{name: "subscription whose topic does not exist", subscriptionID: "orphan", pos: earliest, wantCode: connect.CodeFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			_, err := h.seek(ctx, tt.subscriptionID, tt.pos)
			if code := connectCode(t, err); code != tt.wantCode {
				t.Fatalf("code %s, want %s (error: %v)", code, tt.wantCode, err)
			}
			if got := violationFields(err); !slices.Equal(got, tt.wantFields) {
				t.Fatalf("field violations %q, want %q (error: %v)", got, tt.wantFields, err)
			}
		})
	}
}

// brokerWithoutSeek hides every optional capability of the broker it wraps, as a driver without Seek.
type brokerWithoutSeek struct{ broker.Broker }

func TestSeekOnADriverWithoutSeekIsUnimplemented(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("integration test with the embedded broker; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	embedded, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = embedded.Close() })
	b := brokerWithoutSeek{embedded}
	h := &harness{t: t, fsm: configfsm.New(filter.Compiler)}
	deliveries, err := delivery.NewService(delivery.Deps{Broker: b, Config: h.fsm.Current, Logger: logger}, delivery.Options{})
	if err != nil {
		t.Fatalf("new delivery service: %v", err)
	}
	t.Cleanup(func() { _ = deliveries.Close() })
	service, err := api.New(api.Deps{
		Broker:        b,
		Delivery:      deliveries,
		Config:        h.fsm,
		Subscriptions: pdsv1connect.NewSubscriptionServiceClient(http.DefaultClient, "http://127.0.0.1:1"),
		Logger:        logger,
	}, api.Options{})
	if err != nil {
		t.Fatalf("new api service: %v", err)
	}
	t.Cleanup(func() { _ = service.Close(context.Background()) })
	mux := http.NewServeMux()
	service.Register(mux)
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	h.client = pdsv1connect.NewPortfolioStreamClient(server.Client(), server.URL, connect.WithCodec(jsoncodec.Codec()))
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")

	_, err = h.seek(ctx, "reporting", &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Latest{Latest: true}})
	if code := connectCode(t, err); code != connect.CodeUnimplemented {
		t.Fatalf("code %s, want unimplemented (error: %v)", code, err)
	}
	if !strings.Contains(err.Error(), "cannot move subscriptions") {
		t.Fatalf("error %q does not say the broker driver cannot seek", err)
	}
}

func TestSeekOnANodeNotCaughtUpIsUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	h.catchingUp.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// The node's config may not know the subscription yet: NotFound would be a lie, Unavailable is retryable.
	_, err := h.seek(ctx, "reporting", &pdsv1.SeekPosition{Position: &pdsv1.SeekPosition_Earliest{Earliest: true}})
	if code := connectCode(t, err); code != connect.CodeUnavailable {
		t.Fatalf("code %s, want unavailable (error: %v)", code, err)
	}
}
