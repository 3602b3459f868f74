package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"google.golang.org/protobuf/proto"
)

const (
	tenant    = tenancy.DefaultTenantID
	topicName = "portfolio/state/updated"
	// waitLimit bounds every wait for something that should happen; generous so a loaded CI machine
	// does not fail a correct engine.
	waitLimit = 20 * time.Second
	// quietPeriod is how long a stream must stay silent to show that it holds an event back.
	quietPeriod = 300 * time.Millisecond
)

// harness is one data-plane node's delivery path: a real embedded broker, a real config FSM fed through
// raft log entries, and a delivery Service reading that FSM.
type harness struct {
	tb      testing.TB
	broker  broker.Broker
	fsm     *configfsm.FSM
	service *delivery.Service
	topic   *pdsv1.Topic

	mu    sync.Mutex
	index uint64
}

type harnessOptions struct {
	delivery   delivery.Options
	partitions int32
}

func newHarness(tb testing.TB, opts harnessOptions) *harness {
	tb.Helper()
	b, err := broker.OpenEmbedded(context.Background(), broker.EmbeddedOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("open embedded broker: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close embedded broker: %v", err)
		}
	})
	h := &harness{tb: tb, broker: b, fsm: configfsm.New(filter.Compiler)}
	svc, err := delivery.NewService(delivery.Deps{
		Broker: b,
		Config: h.fsm.Current,
		Logger: slog.New(slog.DiscardHandler),
	}, opts.delivery)
	if err != nil {
		tb.Fatalf("new delivery service: %v", err)
	}
	tb.Cleanup(func() {
		if err := svc.Close(); err != nil {
			tb.Errorf("close delivery service: %v", err)
		}
	})
	h.service = svc
	partitions := opts.partitions
	if partitions == 0 {
		partitions = 1
	}
	h.topic = &pdsv1.Topic{
		Id:         uuid.NewString(),
		TenantId:   tenant,
		TopicName:  topicName,
		DataType:   pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Partitions: partitions,
		Enabled:    true,
		CreatedAt:  time.Now().UTC().Add(-time.Hour).Format(time.RFC3339Nano),
	}
	h.apply(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{Topic: h.topic})
	// The data plane creates a replicated topic at the broker before anyone publishes to it.
	if err := b.EnsureTopic(context.Background(), h.topicRef()); err != nil {
		tb.Fatalf("ensure topic: %v", err)
	}
	return h
}

// apply appends one command to the FSM as raft would.
func (h *harness) apply(kind configv1.CommandType, msg proto.Message) {
	h.tb.Helper()
	data, err := configfsm.EncodeCommand(kind, msg)
	if err != nil {
		h.tb.Fatalf("encode %s: %v", kind, err)
	}
	h.mu.Lock()
	h.index++
	entry := &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}
	h.mu.Unlock()
	if res := h.fsm.Apply(entry); res != nil {
		h.tb.Fatalf("apply %s: %v", kind, res)
	}
}

// subscribe creates an active subscription of workflow to the harness topic and returns it.
func (h *harness) subscribe(workflow string, filters *pdsv1.SubscriptionFilters) *pdsv1.Subscription {
	h.tb.Helper()
	sub := &pdsv1.Subscription{
		Id:                 uuid.NewString(),
		TenantId:           tenant,
		SubscriptionId:     "sub-" + uuid.NewString()[:8],
		TopicName:          topicName,
		SubscriberWorkflow: workflow,
		Filters:            filters,
		Status:             "active",
		CreatedAt:          time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano),
	}
	h.putSubscription(sub)
	return sub
}

// update replaces a subscription with a changed copy.
func (h *harness) update(sub *pdsv1.Subscription, change func(*pdsv1.Subscription)) {
	h.tb.Helper()
	next := proto.Clone(sub).(*pdsv1.Subscription)
	change(next)
	h.putSubscription(next)
}

func (h *harness) putSubscription(sub *pdsv1.Subscription) {
	h.tb.Helper()
	h.apply(configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION, &configv1.PutSubscription{Subscription: sub})
}

func (h *harness) deleteSubscription(sub *pdsv1.Subscription) {
	h.tb.Helper()
	h.apply(configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION, &configv1.DeleteSubscription{
		TenantId: tenant, SubscriptionId: sub.GetSubscriptionId(),
	})
}

func (h *harness) topicRef() broker.TopicRef {
	return broker.TopicRef{TenantID: tenant, ID: h.topic.GetId(), Name: topicName, Partitions: int(h.topic.GetPartitions())}
}

// publish normalizes events as the publish path does and stores them at the broker.
func (h *harness) publish(events ...*pdsv1.PortfolioDistribution) {
	h.tb.Helper()
	ref := h.topicRef()
	records := make([]broker.Record, 0, len(events))
	for i, ev := range events {
		if err := routing.Normalize(ev, fmt.Sprintf("events[%d]", i), time.Now()); err != nil {
			h.tb.Fatalf("normalize event %d: %v", i, err)
		}
		value, err := proto.Marshal(ev)
		if err != nil {
			h.tb.Fatalf("marshal event %d: %v", i, err)
		}
		key := ev.GetRouting().GetRoutingKey()
		records = append(records, broker.Record{
			Partition: routing.Partition(key, ref.Partitions),
			Key:       key,
			EventID:   ev.GetEventId(),
			Value:     value,
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := h.broker.Publish(ctx, ref, records); err != nil {
		h.tb.Fatalf("publish %d events: %v", len(records), err)
	}
}

func (h *harness) open(sub *pdsv1.Subscription, opts delivery.StreamOptions) *delivery.Session {
	h.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sess, err := h.service.Open(ctx, tenant, sub.GetSubscriptionId(), opts)
	if err != nil {
		h.tb.Fatalf("open session of %s: %v", sub.GetSubscriptionId(), err)
	}
	h.tb.Cleanup(func() { _ = sess.Close() })
	return sess
}

func (h *harness) acknowledge(sub *pdsv1.Subscription, events ...*pdsv1.DeliveredEvent) {
	h.tb.Helper()
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetAckId()
	}
	unknown, err := h.service.Acknowledge(context.Background(), tenant, sub.GetSubscriptionId(), ids)
	if err != nil {
		h.tb.Fatalf("acknowledge %d events: %v", len(ids), err)
	}
	if len(unknown) > 0 {
		h.tb.Fatalf("acknowledge: ack ids %v reported unknown right after delivery", unknown)
	}
}

// stateEvent is a PORTFOLIO_STATE event of a portfolio, for the given target workflows.
func stateEvent(portfolioID string, totalValue float64, targets ...string) *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId: portfolioID,
			TotalValue:  totalValue,
			Details:     &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD"}},
		},
		Routing: &pdsv1.RoutingInfo{Topic: topicName, TargetWorkflows: targets},
	}
}

// receive calls Next until it has n events, failing the test if they do not come within waitLimit.
func receive(tb testing.TB, sess *delivery.Session, n int) []*pdsv1.DeliveredEvent {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var got []*pdsv1.DeliveredEvent
	for len(got) < n {
		events, err := sess.Next(ctx)
		if err != nil {
			tb.Fatalf("waiting for %d events, got %d (%s): %v", n, len(got), portfolioIDs(got), err)
		}
		got = append(got, events...)
	}
	if len(got) > n {
		tb.Fatalf("wanted %d events, got %d: %s", n, len(got), portfolioIDs(got))
	}
	return got
}

// expectQuiet checks that Next hands out nothing for quietPeriod.
func expectQuiet(tb testing.TB, sess *delivery.Session, why string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quietPeriod)
	defer cancel()
	events, err := sess.Next(ctx)
	if len(events) > 0 {
		tb.Fatalf("%s, but Next handed out %s", why, portfolioIDs(events))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("%s, but Next returned %v instead of waiting", why, err)
	}
}

func portfolioIDs(events []*pdsv1.DeliveredEvent) string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetEvent().GetData().GetPortfolioId()
	}
	return "[" + strings.Join(ids, " ") + "]"
}

func eventIDs(events []*pdsv1.DeliveredEvent) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.GetEvent().GetEventId()
	}
	return ids
}

// decodeAll returns events as a protobuf subscriber reads them: encoded and decoded again, so that events
// the session left encoded (StreamOptions.EncodedEvents) have their Event.
func decodeAll(tb testing.TB, events []*pdsv1.DeliveredEvent) []*pdsv1.DeliveredEvent {
	tb.Helper()
	out := make([]*pdsv1.DeliveredEvent, len(events))
	for i, ev := range events {
		b, err := proto.Marshal(ev)
		if err != nil {
			tb.Fatalf("encode delivered event %d: %v", i, err)
		}
		out[i] = &pdsv1.DeliveredEvent{}
		if err := proto.Unmarshal(b, out[i]); err != nil {
			tb.Fatalf("decode delivered event %d: %v", i, err)
		}
	}
	return out
}
