package api_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
	"google.golang.org/protobuf/proto"
)

const stateTopic = "portfolio/state/updated"

func violationFields(err error) []string {
	var fields []string
	for _, v := range apierr.Violations(err) {
		fields = append(fields, v.GetField())
	}
	slices.Sort(fields)
	return fields
}

func TestPublishRejectsInvalidBatchesNamingEveryBadField(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4, true)

	valid := specExampleEvent
	tooHighPriority := valid()
	tooHighPriority.Routing.Priority = 12
	noDataType := valid()
	noDataType.DataType = pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED
	unknownTopic := valid()
	unknownTopic.Routing.Topic = "portfolio/state/nowhere"
	wrongType := valid()
	wrongType.DataType = pdsv1.PortfolioDataType_RISK_BUDGET
	wrongType.Routing.Topic = stateTopic
	nanInDetails := valid()
	nanInDetails.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
		Positions: []*pdsv1.Position{{InstrumentId: "AAPL"}, {InstrumentId: "BND", Weight: math.NaN()}}}}
	otherDetails := valid()
	otherDetails.Data.Details = &pdsv1.PortfolioData_CashManagement{CashManagement: &pdsv1.CashManagementDetails{Currency: "USD"}}
	tooMany := make([]*pdsv1.PortfolioDistribution, routing.MaxEventsPerPublish+1)
	for i := range tooMany {
		tooMany[i] = valid()
	}

	tests := []struct {
		name       string
		events     []*pdsv1.PortfolioDistribution
		wantFields []string
	}{
		{name: "empty batch", events: nil, wantFields: []string{"events"}},
		{name: "too many events", events: tooMany, wantFields: []string{"events"}},
		{name: "errors of several events together", events: []*pdsv1.PortfolioDistribution{noDataType, valid(), tooHighPriority},
			wantFields: []string{"events[0].data_type", "events[2].routing.priority"}},
		{name: "topic that does not exist", events: []*pdsv1.PortfolioDistribution{valid(), unknownTopic},
			wantFields: []string{"events[1].routing.topic"}},
		{name: "data type the topic does not carry", events: []*pdsv1.PortfolioDistribution{wrongType},
			wantFields: []string{"events[0].data_type"}},
		{name: "bad values inside details", events: []*pdsv1.PortfolioDistribution{valid(), nanInDetails},
			wantFields: []string{"events[1].data.portfolio_state.positions[1].weight"}},
		{name: "details of another data type", events: []*pdsv1.PortfolioDistribution{otherDetails},
			wantFields: []string{"events[0].data.cash_management"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			_, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: tt.events}))
			if code := connectCode(t, err); code != connect.CodeInvalidArgument {
				t.Fatalf("code %s, want invalid_argument (error: %v)", code, err)
			}
			if got := violationFields(err); !slices.Equal(got, tt.wantFields) {
				t.Fatalf("field violations %q, want %q (error: %v)", got, tt.wantFields, err)
			}
		})
	}
}

// TestPublishRejectsStringsThatAreNotUTF8 sends events whose strings are not UTF-8 over protobuf, as a
// producer with a careless encoder could. Publish decodes protobuf without checking UTF-8 (UnmarshalVT), so
// it must refuse them itself: stored, such an event would fail every subscriber's protobuf decoder.
func TestPublishRejectsStringsThatAreNotUTF8(t *testing.T) {
	t.Parallel()
	h := newHarnessWith(t, harnessOptions{h2c: true})
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4, true)
	// proto.Marshal refuses such strings, so the producer here encodes with MarshalVT, which does not check.
	producer := pdsv1connect.NewPortfolioStreamClient(h.h2cClient, h.url, connect.WithCodec(uncheckedProtoCodec{}))

	badCurrency := specExampleEvent()
	badCurrency.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "EU\xffR"}}
	badWorkflow := specExampleEvent()
	badWorkflow.Routing.TargetWorkflows = []string{"reporting_analytics", "ui\xc3"}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := producer.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{specExampleEvent(), badCurrency, badWorkflow}}))
	if code := connectCode(t, err); code != connect.CodeInvalidArgument {
		t.Fatalf("code %s, want invalid_argument (error: %v)", code, err)
	}
	want := []string{"events[1].data.portfolio_state.currency", "events[2].routing.target_workflows[1]"}
	if got := violationFields(err); !slices.Equal(got, want) {
		t.Fatalf("field violations %q, want %q (error: %v)", got, want, err)
	}
}

// uncheckedProtoCodec is a protobuf codec that encodes strings without checking UTF-8.
type uncheckedProtoCodec struct{}

func (uncheckedProtoCodec) Name() string { return "proto" }

func (uncheckedProtoCodec) Marshal(v any) ([]byte, error) {
	return v.(interface{ MarshalVT() ([]byte, error) }).MarshalVT()
}

func (uncheckedProtoCodec) Unmarshal(data []byte, v any) error {
	return proto.Unmarshal(data, v.(proto.Message))
}

func TestPublishToUnknownTopicTellsToCreateIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{specExampleEvent()}}))
	if code := connectCode(t, err); code != connect.CodeInvalidArgument {
		t.Fatalf("code %s, want invalid_argument (error: %v)", code, err)
	}
	violations := apierr.Violations(err)
	if len(violations) != 1 || violations[0].GetField() != "events[0].routing.topic" {
		t.Fatalf("violations %v, want one on events[0].routing.topic", violations)
	}
	for _, want := range []string{`"portfolio/state/updated"`, "create it"} {
		if !strings.Contains(violations[0].GetDescription(), want) {
			t.Fatalf("description %q does not mention %s", violations[0].GetDescription(), want)
		}
	}
}

func TestPublishToDisabledTopicFailsPrecondition(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, false)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{specExampleEvent()}}))
	if code := connectCode(t, err); code != connect.CodeFailedPrecondition {
		t.Fatalf("code %s, want failed_precondition (error: %v)", code, err)
	}
	if !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("error %q does not say the topic is disabled", err)
	}
}

func TestPublishedEventReachesTheStreamAsTheSpecificationExample(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})

	published := h.publish(ctx, specExampleEvent())
	if len(published.GetEvents()) != 1 {
		t.Fatalf("publish answered %d events, want 1", len(published.GetEvents()))
	}
	p := published.GetEvents()[0]
	if p.GetEventId() != "uuid" || p.GetTopic() != stateTopic || p.GetRoutingKey() != "portfolio_001.state.update" {
		t.Fatalf("published event %v, want event_id uuid on %s with key portfolio_001.state.update", p, stateTopic)
	}
	if want := int32(routing.Partition("portfolio_001.state.update", 4)); p.GetPartition() != want {
		t.Fatalf("partition %d, want %d", p.GetPartition(), want)
	}

	got := receiveEvents(t, stream, 1)[0]
	if got.GetAckId() == "" || got.GetDeliveryAttempt() != 1 || got.GetDataType() != pdsv1.PortfolioDataType_PORTFOLIO_STATE {
		t.Fatalf("delivered %v, want an ack id, attempt 1, PORTFOLIO_STATE", got)
	}
	body, err := jsoncodec.Marshal(got.GetEvent())
	if err != nil {
		t.Fatalf("marshal delivered event: %v", err)
	}
	assertSameJSON(t, "delivered portfolio_distributed event", body, specExampleJSON)
}

func TestAcknowledgeConfirmsOnceAndReportsUnknownIDs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	h.publish(ctx, specExampleEvent())
	ackID := receiveEvents(t, stream, 1)[0].GetAckId()

	ack := func(ids ...string) ([]string, error) {
		resp, err := h.client.Acknowledge(ctx, connect.NewRequest(&pdsv1.AcknowledgeRequest{SubscriptionId: "reporting", AckIds: ids}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetUnknownAckIds(), nil
	}
	if unknown, err := ack(ackID); err != nil || len(unknown) != 0 {
		t.Fatalf("first acknowledge: unknown %q, error %v; want all known", unknown, err)
	}
	if unknown, err := ack(ackID); err != nil || !slices.Equal(unknown, []string{ackID}) {
		t.Fatalf("second acknowledge: unknown %q, error %v; want %q reported as unknown", unknown, err, ackID)
	}
	_, err := ack()
	if code := connectCode(t, err); code != connect.CodeInvalidArgument || !slices.Equal(violationFields(err), []string{"ack_ids"}) {
		t.Fatalf("acknowledge without ids: code %s, fields %q; want invalid_argument on ack_ids", code, violationFields(err))
	}
}

func TestStreamRefusesWhatCannotBeStreamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("paused-one", stateTopic, "reporting_analytics", "paused")

	tests := []struct {
		name      string
		req       *pdsv1.StreamRequest
		wantCode  connect.Code
		wantField string
	}{
		{name: "no subscription id", req: &pdsv1.StreamRequest{}, wantCode: connect.CodeInvalidArgument, wantField: "subscription_id"},
		{name: "max in flight over the limit", req: &pdsv1.StreamRequest{SubscriptionId: "paused-one", MaxInFlight: 10001},
			wantCode: connect.CodeInvalidArgument, wantField: "max_in_flight"},
		{name: "unknown subscription", req: &pdsv1.StreamRequest{SubscriptionId: "nobody"}, wantCode: connect.CodeNotFound},
		{name: "paused subscription", req: &pdsv1.StreamRequest{SubscriptionId: "paused-one"}, wantCode: connect.CodeFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			stream := h.openStream(ctx, tt.req)
			if stream.Receive() {
				t.Fatalf("stream delivered %v, want it refused", stream.Msg())
			}
			err := stream.Err()
			if code := connectCode(t, err); code != tt.wantCode {
				t.Fatalf("code %s, want %s (error: %v)", code, tt.wantCode, err)
			}
			if tt.wantField != "" && !slices.Equal(violationFields(err), []string{tt.wantField}) {
				t.Fatalf("field violations %q, want %q", violationFields(err), tt.wantField)
			}
		})
	}
}

func TestManageSubscriptionAnswersOnceTheNodeCanStreamIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	manage := func(action pdsv1.SubscriptionAction, sub *pdsv1.Subscription) (*pdsv1.SubscriptionResponse, error) {
		resp, err := h.client.ManageSubscription(ctx, connect.NewRequest(&pdsv1.SubscriptionRequest{Action: action, Subscription: sub}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	created, err := manage(pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_CREATE, &pdsv1.Subscription{
		SubscriptionId: "ui", TopicName: stateTopic, SubscriberWorkflow: "user_interface",
	})
	if err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	if have := h.fsm.Current().Version; have < created.GetConfigVersion() {
		t.Fatalf("answered at config version %d while the node has only %d", created.GetConfigVersion(), have)
	}
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "ui"})
	h.publish(ctx, specExampleEvent())
	if got := receiveEvents(t, stream, 1)[0]; got.GetEvent().GetEventId() != "uuid" {
		t.Fatalf("stream of the new subscription delivered %v, want the published event", got)
	}

	_, err = manage(pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_CREATE, &pdsv1.Subscription{
		SubscriptionId: "ui", TopicName: stateTopic, SubscriberWorkflow: "user_interface",
	})
	if code := connectCode(t, err); code != connect.CodeAlreadyExists {
		t.Fatalf("second create: code %s, want the control plane's already_exists (error: %v)", code, err)
	}

	deleted, err := manage(pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_DELETE, &pdsv1.Subscription{SubscriptionId: "ui"})
	if err != nil {
		t.Fatalf("delete subscription: %v", err)
	}
	if _, still := h.fsm.Current().Subscription(deleted.GetSubscription().GetTenantId(), "ui"); still {
		t.Fatal("the node still has the subscription after DELETE answered")
	}

	_, err = manage(pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_UNSPECIFIED, nil)
	if code := connectCode(t, err); code != connect.CodeInvalidArgument || !slices.Equal(violationFields(err), []string{"action"}) {
		t.Fatalf("no action: code %s, fields %q; want invalid_argument on action", code, violationFields(err))
	}
}

func TestOneBatchSpanningTopicsReachesEachTopicsSubscribers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const cashTopic = "portfolio/cash/updated"
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2, true)
	h.putTopic(cashTopic, pdsv1.PortfolioDataType_CASH_MANAGEMENT, 3, true)
	h.putSubscription("state-reader", stateTopic, "reporting_analytics", "active")
	h.putSubscription("cash-reader", cashTopic, "treasury", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stateStream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "state-reader", AutoAck: true})
	cashStream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "cash-reader", AutoAck: true})

	cash := specExampleEvent()
	cash.EventId, cash.DataType, cash.Routing.TargetWorkflows = "cash-1", pdsv1.PortfolioDataType_CASH_MANAGEMENT, nil
	published := h.publish(ctx, specExampleEvent(), cash)
	if got := published.GetEvents()[1]; got.GetTopic() != cashTopic || got.GetRoutingKey() != "portfolio_001.cash.update" {
		t.Fatalf("cash event routed to %q with key %q, want %q and portfolio_001.cash.update", got.GetTopic(), got.GetRoutingKey(), cashTopic)
	}

	if got := receiveEvents(t, stateStream, 1)[0]; got.GetEvent().GetEventId() != "uuid" || got.GetAckId() != "" {
		t.Fatalf("state subscriber got %v, want event uuid without an ack id (auto_ack)", got)
	}
	if got := receiveEvents(t, cashStream, 1)[0]; got.GetEvent().GetEventId() != "cash-1" {
		t.Fatalf("cash subscriber got %v, want event cash-1", got)
	}
}

func TestEventsOfAStreamThatWentAwayUnacknowledgedComeAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	firstCtx, dropFirst := context.WithCancel(ctx)
	first := h.openStream(firstCtx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	h.publish(ctx, specExampleEvent())
	if got := receiveEvents(t, first, 1)[0]; got.GetDeliveryAttempt() != 1 {
		t.Fatalf("first delivery attempt %d, want 1", got.GetDeliveryAttempt())
	}
	dropFirst() // the subscriber disconnects without acknowledging

	second := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	got := receiveEvents(t, second, 1)[0]
	if got.GetEvent().GetEventId() != "uuid" || got.GetDeliveryAttempt() < 2 {
		t.Fatalf("reconnected stream got %s attempt %d, want event uuid again with attempt >= 2",
			got.GetEvent().GetEventId(), got.GetDeliveryAttempt())
	}
}

func TestNodeNotCaughtUpAnswersUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("reporting", stateTopic, "reporting_analytics", "active")
	h.catchingUp.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	_, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{specExampleEvent()}}))
	if code := connectCode(t, err); code != connect.CodeUnavailable {
		t.Fatalf("publish: code %s, want unavailable (error: %v)", code, err)
	}
	stream := h.openStream(ctx, &pdsv1.StreamRequest{SubscriptionId: "reporting"})
	if stream.Receive() {
		t.Fatalf("stream delivered %v while the node is not ready", stream.Msg())
	}
	if code := connectCode(t, stream.Err()); code != connect.CodeUnavailable {
		t.Fatalf("stream: code %s, want unavailable (error: %v)", code, stream.Err())
	}
}
