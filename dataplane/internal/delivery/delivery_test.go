package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"google.golang.org/protobuf/proto"
)

func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a real embedded broker; skipped with -short")
	}
}

func TestSessionDeliversOnlyEventsTheSubscriptionAccepts(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	cases := []struct {
		name     string
		workflow string
		filters  *pdsv1.SubscriptionFilters
		publish  []*pdsv1.PortfolioDistribution
		want     string // portfolio ids delivered, in order
	}{
		{
			name:     "target workflows",
			workflow: "risk-engine",
			publish: []*pdsv1.PortfolioDistribution{
				stateEvent("P-reporting-only", 1, "reporting"),
				stateEvent("P-both", 2, "reporting", "risk-engine"),
				stateEvent("P-other", 3, "rebalancer"),
				stateEvent("P-everyone", 4),
			},
			want: "[P-both P-everyone]",
		},
		{
			name:     "portfolio filter",
			workflow: "reporting",
			filters:  &pdsv1.SubscriptionFilters{PortfolioIds: []string{"P-keep"}},
			publish: []*pdsv1.PortfolioDistribution{
				stateEvent("P-drop", 1),
				stateEvent("P-keep", 2),
				stateEvent("P-drop", 3),
				stateEvent("P-keep", 4),
			},
			want: "[P-keep P-keep]",
		},
		{
			name:     "CEL filter",
			workflow: "reporting",
			filters:  &pdsv1.SubscriptionFilters{Cel: "event.data.total_value > 1000000.0"},
			publish: []*pdsv1.PortfolioDistribution{
				stateEvent("P-small", 10),
				stateEvent("P-large", 2_000_000),
				stateEvent("P-almost", 999_999),
				stateEvent("P-huge", 5_000_000),
			},
			want: "[P-large P-huge]",
		},
	}
	for _, tc := range cases {
		for _, encoded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, encoded events %v", tc.name, encoded), func(t *testing.T) {
				t.Parallel()
				checkSessionAccepts(t, tc.workflow, tc.filters, tc.publish, tc.want, delivery.StreamOptions{EncodedEvents: encoded})
			})
		}
	}
}

// checkSessionAccepts publishes events to one partition and checks that a session of a new subscription
// delivers exactly the ones whose portfolio ids want lists, in order, and settles the rest at the broker.
func checkSessionAccepts(t *testing.T, workflow string, filters *pdsv1.SubscriptionFilters,
	publish []*pdsv1.PortfolioDistribution, want string, opts delivery.StreamOptions,
) {
	// Publishing fills in event ids and timestamps: each run gets its own copies.
	publish = slices.Clone(publish)
	for i, ev := range publish {
		publish[i] = proto.CloneOf(ev)
	}
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe(workflow, filters)
	sess := h.open(sub, opts)
	h.publish(publish...)

	// One partition keeps publish order, and the last published event is accepted: had a rejected
	// event been delivered, it would show up here.
	wantCount := strings.Count(want, " ") + 1
	got := decodeAll(t, receive(t, sess, wantCount))
	if ids := portfolioIDs(got); ids != want {
		t.Fatalf("delivered %s, want %s", ids, want)
	}
	h.acknowledge(sub, got...)

	// Rejected events were settled at the broker, so a new stream starts with new events only.
	if err := sess.Close(); err != nil {
		t.Fatalf("close session: %v", err)
	}
	next := h.open(sub, opts)
	last := publish[len(publish)-1]
	fresh := stateEvent(last.GetData().GetPortfolioId(), last.GetData().GetTotalValue())
	h.publish(fresh)
	if again := decodeAll(t, receive(t, next, 1)); again[0].GetEvent().GetEventId() != fresh.GetEventId() {
		t.Fatalf("after acknowledging, a new stream got event %s (%s), want only the new event %s",
			again[0].GetEvent().GetEventId(), portfolioIDs(again), fresh.GetEventId())
	}
}

func TestDeliveredEventCarriesTheDistributedEvent(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	for _, encoded := range []bool{false, true} {
		t.Run(fmt.Sprintf("encoded events %v", encoded), func(t *testing.T) {
			t.Parallel()
			checkDeliveredEvent(t, encoded)
		})
	}
}

func checkDeliveredEvent(t *testing.T, encoded bool) {
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{EncodedEvents: encoded})
	ev := stateEvent("P-1", 1234.5, "reporting")
	ev.Routing.Priority = 7
	ev.Data.PerformanceMetrics = &pdsv1.PerformanceMetricsData{DailyReturn: 0.01, YtdReturn: 0.07}
	h.publish(ev)

	raw := receive(t, sess, 1)[0]
	if leftEncoded := raw.GetEvent() == nil; leftEncoded != encoded {
		t.Fatalf("event left encoded: %v, want %v (StreamOptions.EncodedEvents %v, no filter to decode for)", leftEncoded, encoded, encoded)
	}
	got := decodeAll(t, []*pdsv1.DeliveredEvent{raw})[0]
	want := []struct{ field, got, want string }{
		{"event.event_id", got.GetEvent().GetEventId(), ev.GetEventId()},
		{"event.timestamp", got.GetEvent().GetTimestamp(), ev.GetTimestamp()},
		{"event.distribution.topic", got.GetEvent().GetDistribution().GetTopic(), topicName},
		{"event.distribution.routing_key", got.GetEvent().GetDistribution().GetRoutingKey(), "P-1.state.update"},
		{"event.distribution.target_workflows", fmt.Sprint(got.GetEvent().GetDistribution().GetTargetWorkflows()), "[reporting]"},
		{"event.data.portfolio_id", got.GetEvent().GetData().GetPortfolioId(), "P-1"},
		{"event.data.performance_metrics.ytd_return", fmt.Sprint(got.GetEvent().GetData().GetPerformanceMetrics().GetYtdReturn()), "0.07"},
		{"data_type", got.GetDataType().String(), "PORTFOLIO_STATE"},
		{"priority", fmt.Sprint(got.GetPriority()), "7"},
		{"delivery_attempt", fmt.Sprint(got.GetDeliveryAttempt()), "1"},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %q, want %q", w.field, w.got, w.want)
		}
	}
	if got.GetAckId() == "" {
		t.Error("ack_id is empty on a stream without auto_ack")
	}
}

func TestEventsOfOneRoutingKeyArriveInPublishOrder(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{partitions: 4})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{MaxInFlight: 50})
	const portfolios, perPortfolio = 10, 30
	var events []*pdsv1.PortfolioDistribution
	for seq := range perPortfolio {
		for p := range portfolios {
			events = append(events, stateEvent(fmt.Sprintf("P-%d", p), float64(seq)))
		}
	}
	h.publish(events...)

	last := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for received := 0; received < len(events); {
		batch, err := sess.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", received, len(events), err)
		}
		for _, ev := range batch {
			key := ev.GetEvent().GetDistribution().GetRoutingKey()
			seq := ev.GetEvent().GetData().GetTotalValue()
			if prev, seen := last[key]; seen && seq != prev+1 {
				t.Fatalf("routing key %s: event %v arrived after %v", key, seq, prev)
			}
			last[key] = seq
		}
		received += len(batch)
		h.acknowledge(sub, batch...)
	}
}

func TestMaxInFlightHoldsEventsBackUntilAcknowledged(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{MaxInFlight: 2})
	h.publish(stateEvent("P-1", 1), stateEvent("P-2", 2), stateEvent("P-3", 3), stateEvent("P-4", 4))

	first := receive(t, sess, 2)
	if ids := portfolioIDs(first); ids != "[P-1 P-2]" {
		t.Fatalf("first events %s, want [P-1 P-2]", ids)
	}
	expectQuiet(t, sess, "2 events are unacknowledged with max_in_flight 2")

	h.acknowledge(sub, first[0])
	if ids := portfolioIDs(receive(t, sess, 1)); ids != "[P-3]" {
		t.Fatalf("after acknowledging one event, got %s, want [P-3]", ids)
	}
	expectQuiet(t, sess, "2 events are unacknowledged again")
}

func TestUnacknowledgedEventIsDeliveredAgainAfterTheAckDeadline(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{delivery: delivery.Options{AckDeadline: time.Second}})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{MaxInFlight: 1})
	h.publish(stateEvent("P-1", 1))

	first := receive(t, sess, 1)[0]
	again := receive(t, sess, 1)[0]
	if again.GetEvent().GetEventId() != first.GetEvent().GetEventId() {
		t.Fatalf("after the ack deadline got event %s, want %s again", again.GetEvent().GetEventId(), first.GetEvent().GetEventId())
	}
	if again.GetDeliveryAttempt() != 2 {
		t.Fatalf("redelivered event has delivery_attempt %d, want 2", again.GetDeliveryAttempt())
	}
	h.acknowledge(sub, again)
}

func TestClosingASessionHandsItsUnacknowledgedEventsToTheNext(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	// The ack deadline is far beyond waitLimit: only the close can bring the events back in time.
	h := newHarness(t, harnessOptions{delivery: delivery.Options{AckDeadline: time.Hour}})
	sub := h.subscribe("reporting", nil)
	first := h.open(sub, delivery.StreamOptions{})
	h.publish(stateEvent("P-1", 1), stateEvent("P-2", 2), stateEvent("P-3", 3))
	delivered := receive(t, first, 3)
	if err := first.Close(); err != nil {
		t.Fatalf("close first session: %v", err)
	}

	var staleIDs []string
	for _, ev := range delivered {
		staleIDs = append(staleIDs, ev.GetAckId())
	}
	unknown, err := h.service.Acknowledge(context.Background(), tenant, sub.GetSubscriptionId(), staleIDs)
	if err != nil {
		t.Fatalf("acknowledge ack ids of a closed session: %v", err)
	}
	if !slices.Equal(unknown, staleIDs) {
		t.Fatalf("ack ids of a closed session: unknown = %v, want all of %v", unknown, staleIDs)
	}

	second := h.open(sub, delivery.StreamOptions{})
	redelivered := receive(t, second, 3)
	gotIDs, wantIDs := eventIDs(redelivered), eventIDs(delivered)
	sort.Strings(gotIDs)
	sort.Strings(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("new session got events %v, want the closed session's %v", gotIDs, wantIDs)
	}
	for _, ev := range redelivered {
		if ev.GetDeliveryAttempt() < 2 {
			t.Errorf("redelivered event %s has delivery_attempt %d, want at least 2", ev.GetEvent().GetEventId(), ev.GetDeliveryAttempt())
		}
	}
}

func TestAutoAckSettlesEventsAsTheyAreHandedOut(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{delivery: delivery.Options{AckDeadline: time.Hour}})
	sub := h.subscribe("reporting", nil)
	auto := h.open(sub, delivery.StreamOptions{AutoAck: true, MaxInFlight: 2})
	h.publish(stateEvent("P-1", 1), stateEvent("P-2", 2), stateEvent("P-3", 3))

	// More events than max_in_flight arrive without a single Acknowledge call.
	got := receive(t, auto, 3)
	for _, ev := range got {
		if ev.GetAckId() != "" {
			t.Fatalf("auto-ack event %s has ack_id %q, want empty", ev.GetEvent().GetEventId(), ev.GetAckId())
		}
	}
	if err := auto.Close(); err != nil {
		t.Fatalf("close auto-ack session: %v", err)
	}

	next := h.open(sub, delivery.StreamOptions{})
	h.publish(stateEvent("P-new", 4))
	if ids := portfolioIDs(receive(t, next, 1)); ids != "[P-new]" {
		t.Fatalf("after an auto-ack session closed, a new session got %s, want only [P-new]", ids)
	}
}

func TestAcknowledgeReportsAckIDsItDoesNotHold(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	other := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{})
	h.publish(stateEvent("P-1", 1), stateEvent("P-2", 2))
	got := receive(t, sess, 2)
	h.acknowledge(sub, got[0])

	cases := []struct {
		name           string
		subscriptionID string
		ackID          string
	}{
		{"malformed", sub.GetSubscriptionId(), "not-an-ack-id"},
		{"empty token", sub.GetSubscriptionId(), sess.ID() + "."},
		{"unknown session", sub.GetSubscriptionId(), "nosuchsession.1"},
		{"already acknowledged", sub.GetSubscriptionId(), got[0].GetAckId()},
		{"another subscription", other.GetSubscriptionId(), got[1].GetAckId()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			unknown, err := h.service.Acknowledge(context.Background(), tenant, tc.subscriptionID, []string{tc.ackID})
			if err != nil {
				t.Fatalf("Acknowledge(%q) failed: %v; unknown ids are not an error", tc.ackID, err)
			}
			if !slices.Equal(unknown, []string{tc.ackID}) {
				t.Fatalf("Acknowledge(%q): unknown = %v, want [%s]", tc.ackID, unknown, tc.ackID)
			}
		})
	}

	// The id acknowledged under the wrong subscription is still held for its own.
	unknown, err := h.service.Acknowledge(context.Background(), tenant, sub.GetSubscriptionId(),
		[]string{got[1].GetAckId(), "garbage"})
	if err != nil || !slices.Equal(unknown, []string{"garbage"}) {
		t.Fatalf("mixed acknowledge: unknown = %v, err = %v; want [garbage], nil", unknown, err)
	}
}

func TestConfigChangesReachAnOpenStream(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	cases := []struct {
		name    string
		change  func(h *harness, sub *pdsv1.Subscription)
		wantErr error
	}{
		{
			name: "pause",
			change: func(h *harness, sub *pdsv1.Subscription) {
				h.update(sub, func(s *pdsv1.Subscription) { s.Status = "paused" })
			},
			wantErr: delivery.ErrSubscriptionPaused,
		},
		{
			name:    "delete",
			change:  func(h *harness, sub *pdsv1.Subscription) { h.deleteSubscription(sub) },
			wantErr: delivery.ErrSubscriptionNotFound,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{})
			sub := h.subscribe("reporting", nil)
			sess := h.open(sub, delivery.StreamOptions{})

			// Next waits for events that never come; the change alone must end it.
			result := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				events, err := sess.Next(ctx)
				if len(events) > 0 {
					err = fmt.Errorf("unexpected events %s", portfolioIDs(events))
				}
				result <- err
			}()
			tc.change(h, sub)
			if err := <-result; !errors.Is(err, tc.wantErr) {
				t.Fatalf("waiting Next returned %v, want %v", err, tc.wantErr)
			}
			if _, err := h.service.Open(context.Background(), tenant, sub.GetSubscriptionId(), delivery.StreamOptions{}); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Open after the change returned %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A broker that routes by workflow reads only the stream's workflow, so a new workflow needs a new stream.
func TestWorkflowChangeEndsTheStreamAndTheNextStreamReadsTheNewWorkflow(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	sess := h.open(sub, delivery.StreamOptions{})
	h.publish(stateEvent("P-reporting", 1, "reporting"))
	h.acknowledge(sub, receive(t, sess, 1)...)

	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_, err := sess.Next(ctx)
		result <- err
	}()
	h.update(sub, func(s *pdsv1.Subscription) { s.SubscriberWorkflow = "risk" })
	if err := <-result; !errors.Is(err, delivery.ErrWorkflowChanged) {
		t.Fatalf("Next after the workflow change returned %v, want %v", err, delivery.ErrWorkflowChanged)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}

	h.publish(stateEvent("P-reporting", 2, "reporting"), stateEvent("P-risk", 3, "risk"))
	next := h.open(sub, delivery.StreamOptions{})
	if ids := portfolioIDs(receive(t, next, 1)); ids != "[P-risk]" {
		t.Fatalf("the stream opened after the change got %s, want only the event for the new workflow", ids)
	}
}

func TestPausedSubscriptionKeepsItsEventsForResume(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	h.update(sub, func(s *pdsv1.Subscription) { s.Status = "paused" })
	h.publish(stateEvent("P-while-paused", 1))

	h.update(sub, func(s *pdsv1.Subscription) { s.Status = "active" })
	sess := h.open(sub, delivery.StreamOptions{})
	if ids := portfolioIDs(receive(t, sess, 1)); ids != "[P-while-paused]" {
		t.Fatalf("after resume got %s, want the event published while paused", ids)
	}
}

func TestFilterChangeAppliesWithoutReconnect(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", &pdsv1.SubscriptionFilters{PortfolioIds: []string{"P-A"}})
	sess := h.open(sub, delivery.StreamOptions{})
	h.publish(stateEvent("P-A", 1))
	h.acknowledge(sub, receive(t, sess, 1)...)

	h.update(sub, func(s *pdsv1.Subscription) { s.Filters.PortfolioIds = []string{"P-B"} })
	h.publish(stateEvent("P-A", 2), stateEvent("P-B", 3))
	if ids := portfolioIDs(receive(t, sess, 1)); ids != "[P-B]" {
		t.Fatalf("after the filter moved to P-B the open stream got %s, want [P-B]", ids)
	}
}

func TestSessionsOfOneSubscriptionShareItsEvents(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{partitions: 4})
	sub := h.subscribe("reporting", nil)
	sessions := []*delivery.Session{
		h.open(sub, delivery.StreamOptions{MaxInFlight: 10}),
		h.open(sub, delivery.StreamOptions{MaxInFlight: 10}),
	}
	const total = 300
	var events []*pdsv1.PortfolioDistribution
	for i := range total {
		events = append(events, stateEvent(fmt.Sprintf("P-%d", i%25), float64(i)))
	}
	h.publish(events...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	perSession := make([]int, len(sessions))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, sess := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				batch, err := sess.Next(ctx)
				if err != nil {
					return // ctx ended: every event arrived or the test timed out
				}
				if _, err := h.service.Acknowledge(ctx, tenant, sub.GetSubscriptionId(), ackIDs(batch)); err != nil {
					t.Errorf("session %d: acknowledge: %v", i, err)
					return
				}
				mu.Lock()
				for _, ev := range batch {
					seen[ev.GetEvent().GetEventId()]++
				}
				perSession[i] += len(batch)
				if len(seen) == total {
					close(done)
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-done:
	case <-time.After(waitLimit):
	}
	cancel()
	wg.Wait()

	var missing []string
	for _, ev := range events {
		if seen[ev.GetEventId()] == 0 {
			missing = append(missing, ev.GetData().GetPortfolioId())
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d events never reached either session (per session %v): %v", len(missing), total, perSession, missing)
	}
	t.Logf("events per session: %v", perSession)
}

func ackIDs(events []*pdsv1.DeliveredEvent) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetAckId()
	}
	return ids
}

func TestOpenRejectsWhatCannotBeStreamed(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	sub := h.subscribe("reporting", nil)
	orphan := h.subscribe("reporting", nil)
	h.update(orphan, func(s *pdsv1.Subscription) { s.TopicName = "portfolio/cash/updated" })

	cases := []struct {
		name           string
		subscriptionID string
		maxInFlight    int
		wantErr        error
		wantField      string
	}{
		{"unknown subscription", "no-such-subscription", 0, delivery.ErrSubscriptionNotFound, ""},
		{"missing topic", orphan.GetSubscriptionId(), 0, delivery.ErrTopicNotFound, ""},
		{"max_in_flight above the limit", sub.GetSubscriptionId(), delivery.MaxInFlightLimit + 1, delivery.ErrMaxInFlightOutOfRange, "max_in_flight"},
		{"negative max_in_flight", sub.GetSubscriptionId(), -1, delivery.ErrMaxInFlightOutOfRange, "max_in_flight"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sess, err := h.service.Open(context.Background(), tenant, tc.subscriptionID, delivery.StreamOptions{MaxInFlight: tc.maxInFlight})
			if sess != nil {
				_ = sess.Close()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Open returned %v, want %v", err, tc.wantErr)
			}
			if tc.wantField == "" {
				return
			}
			violations := apierr.Violations(apierr.FromError(err))
			if len(violations) != 1 || violations[0].GetField() != tc.wantField {
				t.Fatalf("Open error maps to field violations %v, want one for %q", violations, tc.wantField)
			}
		})
	}
}

func TestNewServiceRequiresEveryDependency(t *testing.T) {
	t.Parallel()
	skipIfShort(t)
	h := newHarness(t, harnessOptions{})
	complete := delivery.Deps{Broker: h.broker, Config: h.fsm.Current, Logger: slog.New(slog.DiscardHandler)}
	cases := []struct {
		name   string
		remove func(*delivery.Deps)
	}{
		{"no broker", func(d *delivery.Deps) { d.Broker = nil }},
		{"no config", func(d *delivery.Deps) { d.Config = nil }},
		{"no logger", func(d *delivery.Deps) { d.Logger = nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			deps := complete
			tc.remove(&deps)
			if svc, err := delivery.NewService(deps, delivery.Options{}); err == nil {
				_ = svc.Close()
				t.Fatalf("NewService accepted %s", tc.name)
			}
		})
	}
}
