package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"testing"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
)

const (
	stateTopic = "portfolio/state/updated"
	// specExampleJSON is the specification's example portfolio_distributed event.
	specExampleJSON = `{
		"event_id": "uuid",
		"timestamp": "2025-06-21T10:00:00.000Z",
		"distribution": {
			"topic": "portfolio/state/updated",
			"routing_key": "portfolio_001.state.update",
			"target_workflows": ["reporting_analytics", "user_interface"]
		},
		"data": {
			"portfolio_id": "portfolio_001",
			"total_value": 1000000.00,
			"performance_metrics": {"daily_return": 0.012, "ytd_return": 0.085}
		}
	}`
)

// timestampFormat is the specification's timestamp form: RFC 3339, UTC, milliseconds.
var timestampFormat = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

// specExampleEvent is what a producer publishes to get the specification's example event; PDS assigns the
// event id and timestamp.
func specExampleEvent() *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        "portfolio_001",
			TotalValue:         1_000_000.00,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.012, YtdReturn: 0.085},
		},
		Routing: &pdsv1.RoutingInfo{
			Topic:           stateTopic,
			RoutingKey:      "portfolio_001.state.update",
			TargetWorkflows: []string{"reporting_analytics", "user_interface"},
		},
	}
}

// portfolioEvent is a small state event for portfolio id, keyed by it.
func portfolioEvent(id string, totalValue float64) *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        id,
			TotalValue:         totalValue,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.001, YtdReturn: 0.02},
		},
		Routing: &pdsv1.RoutingInfo{Topic: stateTopic},
	}
}

// assertSpecExample checks that eventJSON is the specification's example, apart from the event id and
// timestamp PDS assigned, which must equal wantEventID and have the specification's format.
func assertSpecExample(t *testing.T, eventJSON []byte, wantEventID string) {
	t.Helper()
	var got, want map[string]any
	if err := json.Unmarshal(eventJSON, &got); err != nil {
		t.Fatalf("event is not JSON: %v\n%s", err, eventJSON)
	}
	if err := json.Unmarshal([]byte(specExampleJSON), &want); err != nil {
		t.Fatalf("specification example: %v", err)
	}
	if got["event_id"] != wantEventID {
		t.Errorf("event_id = %v, want %q (the id Publish returned)", got["event_id"], wantEventID)
	}
	if ts, _ := got["timestamp"].(string); !timestampFormat.MatchString(ts) {
		t.Errorf("timestamp = %v, want RFC 3339 in UTC with milliseconds like %q", got["timestamp"], want["timestamp"])
	}
	for _, m := range []map[string]any{got, want} {
		delete(m, "event_id")
		delete(m, "timestamp")
	}
	if !reflect.DeepEqual(got, want) {
		gotJSON, _ := json.MarshalIndent(got, "", "  ")
		wantJSON, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("event JSON differs from the specification's example (ids and timestamps aside)\ngot:\n%s\nwant:\n%s", gotJSON, wantJSON)
	}
}

func TestStreamDeliversPublishedEventAsSpecificationJSON(t *testing.T) {
	t.Parallel()
	streamDeliversPublishedEventAsSpecificationJSON(t, embeddedBroker)
}

func streamDeliversPublishedEventAsSpecificationJSON(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4)
	c.createSubscription("analytics-state", stateTopic, "reporting_analytics")

	sub := openStream(t, c.stream, "analytics-state", tl)
	published := c.publish(specExampleEvent())
	publishedAt := time.Now()
	tl.expect(published)

	got := sub.next()
	t.Logf("delivered %v after Publish returned", time.Since(publishedAt))
	if got.GetDeliveryAttempt() != 1 {
		t.Errorf("delivery_attempt = %d on first delivery, want 1", got.GetDeliveryAttempt())
	}
	if got.GetDataType() != pdsv1.PortfolioDataType_PORTFOLIO_STATE {
		t.Errorf("data_type = %v, want PORTFOLIO_STATE", got.GetDataType())
	}
	eventJSON, err := jsoncodec.Marshal(got.GetEvent())
	if err != nil {
		t.Fatalf("marshal delivered event: %v", err)
	}
	assertSpecExample(t, eventJSON, published[0].GetEventId())
	c.acknowledge("analytics-state", got)
}

func TestRESTStateReturnsLatestPublishedEvent(t *testing.T) {
	t.Parallel()
	restStateReturnsLatestPublishedEvent(t, embeddedBroker)
}

func restStateReturnsLatestPublishedEvent(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1)

	older := portfolioEvent("portfolio_001", 999_000)
	c.publish(older)
	published := c.publish(specExampleEvent())
	tl.published += 2

	status, body := httpGet(t, c.dpURL+"/api/v1/portfolio/portfolio_001/state")
	if status != http.StatusOK {
		t.Fatalf("GET state after Publish returned: HTTP %d, want 200; body: %s", status, body)
	}
	assertSpecExample(t, body, published[0].GetEventId())

	status, body = httpGet(t, c.dpURL+"/api/v1/portfolio/portfolio_404/state")
	if status != http.StatusNotFound {
		t.Errorf("GET state of a portfolio without events: HTTP %d, want 404; body: %s", status, body)
	}
}

func TestSubscriberThatDisconnectsWithoutAckGetsEventAgain(t *testing.T) {
	t.Parallel()
	subscriberThatDisconnectsWithoutAckGetsEventAgain(t, embeddedBroker)
}

func subscriberThatDisconnectsWithoutAckGetsEventAgain(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2)
	c.createSubscription("ui-state", stateTopic, "user_interface")

	first := openStream(t, c.stream, "ui-state", tl)
	published := c.publish(specExampleEvent())
	tl.expect(published)
	got := first.next()
	if got.GetEvent().GetEventId() != published[0].GetEventId() {
		t.Fatalf("first delivery is event %q, want %q", got.GetEvent().GetEventId(), published[0].GetEventId())
	}
	first.disconnect()

	again := openStream(t, c.stream, "ui-state", tl).next()
	if again.GetEvent().GetEventId() != published[0].GetEventId() {
		t.Fatalf("after reconnecting got event %q, want the unacknowledged %q again", again.GetEvent().GetEventId(), published[0].GetEventId())
	}
	if again.GetDeliveryAttempt() <= 1 {
		t.Errorf("redelivered event has delivery_attempt %d, want > 1", again.GetDeliveryAttempt())
	}
	c.acknowledge("ui-state", again)
}

func TestPublishedEventsSurviveDataPlaneSIGKILL(t *testing.T) {
	t.Parallel()
	publishedEventsSurviveDataPlaneSIGKILL(t, embeddedBroker)
}

func publishedEventsSurviveDataPlaneSIGKILL(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4)
	c.createSubscription("analytics-state", stateTopic, "reporting_analytics")

	const count = 50
	events := make([]*pdsv1.PortfolioDistribution, count)
	for i := range events {
		events[i] = portfolioEvent(fmt.Sprintf("portfolio_%03d", i%10), float64(1_000_000+i))
	}
	want := map[string]bool{}
	published := c.publish(events...)
	for _, ev := range published {
		want[ev.GetEventId()] = true
	}
	tl.expect(published)
	// Publish returned OK: the events must be durable now, whatever happens to the process.
	c.dataPlane.kill()
	c.startDataPlane()

	sub := openStream(t, c.stream, "analytics-state", tl)
	for len(want) > 0 {
		ev := sub.next()
		delete(want, ev.GetEvent().GetEventId())
		c.acknowledge("analytics-state", ev)
	}
}

func TestManageSubscriptionOnDataPlaneIsImmediatelyStreamable(t *testing.T) {
	t.Parallel()
	manageSubscriptionOnDataPlaneIsImmediatelyStreamable(t, embeddedBroker)
}

func manageSubscriptionOnDataPlaneIsImmediatelyStreamable(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.stream.ManageSubscription(ctx, connect.NewRequest(&pdsv1.SubscriptionRequest{
		Action: pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_CREATE,
		Subscription: &pdsv1.Subscription{
			SubscriptionId: "ui-managed", TopicName: stateTopic, SubscriberWorkflow: "user_interface",
		},
	}))
	if err != nil {
		t.Fatalf("ManageSubscription CREATE: %v", err)
	}
	if resp.Msg.GetConfigVersion() == 0 {
		t.Errorf("ManageSubscription CREATE returned config_version 0")
	}

	// No waiting: the answer promises the data plane already knows the subscription.
	sub := openStream(t, c.stream, "ui-managed", tl)
	published := c.publish(specExampleEvent())
	tl.expect(published)
	got := sub.next()
	if got.GetEvent().GetEventId() != published[0].GetEventId() {
		t.Fatalf("got event %q, want %q", got.GetEvent().GetEventId(), published[0].GetEventId())
	}
	c.acknowledge("ui-managed", got)
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, body
}
