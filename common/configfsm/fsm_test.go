package configfsm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"google.golang.org/protobuf/proto"
)

const tenant = "t1"

type applier struct {
	t     *testing.T
	fsm   *configfsm.FSM
	index uint64
}

func (a *applier) apply(kind configv1.CommandType, msg proto.Message) any {
	a.t.Helper()
	data, err := configfsm.EncodeCommand(kind, msg)
	if err != nil {
		a.t.Fatalf("encode %s: %v", kind, err)
	}
	a.index++
	return a.fsm.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
}

func (a *applier) putTopic(outboxID uint64, name string) {
	a.t.Helper()
	if err := a.apply(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{
		OutboxId: outboxID,
		Topic:    &pdsv1.Topic{Id: "id-" + name, TenantId: tenant, TopicName: name, Partitions: 4, Enabled: true},
	}); err != nil {
		a.t.Fatalf("put topic %q: %v", name, err)
	}
}

func (a *applier) putSubscription(outboxID uint64, id, topic string, filters *pdsv1.SubscriptionFilters) {
	a.t.Helper()
	if err := a.apply(configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION, &configv1.PutSubscription{
		OutboxId: outboxID,
		Subscription: &pdsv1.Subscription{
			Id: "id-" + id, TenantId: tenant, SubscriptionId: id, TopicName: topic,
			SubscriberWorkflow: "wf", Filters: filters, Status: "active",
		},
	}); err != nil {
		a.t.Fatalf("put subscription %q: %v", id, err)
	}
}

// portfolioMatcher matches events of one portfolio: a real Matcher built from the filters.
type portfolioMatcher struct{ id string }

func (m portfolioMatcher) Match(ev *pdsv1.PortfolioDistribution) bool {
	return ev.GetData().GetPortfolioId() == m.id
}

func compileByPortfolio(f *pdsv1.SubscriptionFilters) (configfsm.Matcher, error) {
	ids := f.GetPortfolioIds()
	if len(ids) > 1 {
		return nil, errors.New("one portfolio only")
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return portfolioMatcher{ids[0]}, nil
}

func TestApplyTracksTopicsSubscriptionsVersionAndOutbox(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(compileByPortfolio)}
	a.putTopic(1, "portfolio/state/updated")
	a.putTopic(2, "portfolio/cash/updated")
	a.putSubscription(3, "reporting", "portfolio/state/updated", nil)
	a.putSubscription(4, "ui", "portfolio/state/updated", &pdsv1.SubscriptionFilters{PortfolioIds: []string{"p1"}})

	cfg := a.fsm.Current()
	if cfg.Version != 4 || cfg.LastOutboxID != 4 {
		t.Fatalf("version/outbox = %d/%d, want 4/4", cfg.Version, cfg.LastOutboxID)
	}
	if _, ok := cfg.Topic(tenant, "portfolio/cash/updated"); !ok {
		t.Fatal("topic portfolio/cash/updated missing after put")
	}
	subs := cfg.SubscriptionsOfTopic(tenant, "portfolio/state/updated")
	if len(subs) != 2 || subs[0].Proto.GetSubscriptionId() != "reporting" || subs[1].Proto.GetSubscriptionId() != "ui" {
		t.Fatalf("subscriptions of topic = %v, want [reporting ui]", subs)
	}
	ui, _ := cfg.Subscription(tenant, "ui")
	p1 := &pdsv1.PortfolioDistribution{Data: &pdsv1.PortfolioData{PortfolioId: "p1"}}
	p2 := &pdsv1.PortfolioDistribution{Data: &pdsv1.PortfolioData{PortfolioId: "p2"}}
	if ui.Matcher == nil || !ui.Matcher.Match(p1) || ui.Matcher.Match(p2) {
		t.Fatal("ui subscription's compiled filter does not select portfolio p1 only")
	}

	// Moving a subscription to another topic removes it from the old topic's list.
	a.putSubscription(5, "ui", "portfolio/cash/updated", nil)
	cfg = a.fsm.Current()
	if got := len(cfg.SubscriptionsOfTopic(tenant, "portfolio/state/updated")); got != 1 {
		t.Fatalf("state topic keeps %d subscriptions after ui moved away, want 1", got)
	}
	if got := len(cfg.SubscriptionsOfTopic(tenant, "portfolio/cash/updated")); got != 1 {
		t.Fatalf("cash topic has %d subscriptions after ui moved in, want 1", got)
	}

	if err := a.apply(configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION, &configv1.DeleteSubscription{
		OutboxId: 6, TenantId: tenant, SubscriptionId: "ui",
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.apply(configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC, &configv1.DeleteTopic{
		OutboxId: 7, TenantId: tenant, TopicName: "portfolio/cash/updated",
	}); err != nil {
		t.Fatal(err)
	}
	cfg = a.fsm.Current()
	if _, ok := cfg.Subscription(tenant, "ui"); ok {
		t.Fatal("subscription ui still present after delete")
	}
	if _, ok := cfg.Topic(tenant, "portfolio/cash/updated"); ok {
		t.Fatal("topic still present after delete")
	}
	if cfg.LastOutboxID != 7 {
		t.Fatalf("LastOutboxID = %d, want 7", cfg.LastOutboxID)
	}
}

func TestOlderConfigVersionsStayUnchanged(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(nil)}
	a.putTopic(1, "a")
	before := a.fsm.Current()
	a.putTopic(2, "b")
	if _, ok := before.Topic(tenant, "b"); ok {
		t.Fatal("a Config handed out earlier changed when a later command was applied")
	}
}

func TestApplyRejectsBadEntriesButAdvancesVersion(t *testing.T) {
	cases := []struct {
		name string
		data []byte
	}{
		{"empty entry", nil},
		{"unknown command type", []byte{200, 1, 2}},
		{"undecodable payload", []byte{byte(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC), 0xff, 0xff}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := configfsm.New(nil)
			res := f.Apply(&raft.Log{Index: 9, Type: raft.LogCommand, Data: tc.data})
			if _, isErr := res.(error); !isErr {
				t.Fatalf("Apply returned %v, want an error", res)
			}
			if v := f.Current().Version; v != 9 {
				t.Fatalf("version after a failed command = %d, want 9", v)
			}
		})
	}
}

func TestRejectedCommandStillConsumesItsOutboxRow(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(nil)}
	res := a.apply(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{OutboxId: 12, Topic: &pdsv1.Topic{}})
	if _, isErr := res.(error); !isErr {
		t.Fatalf("put topic without a name: Apply returned %v, want an error", res)
	}
	if got := a.fsm.Current().LastOutboxID; got != 12 {
		t.Fatalf("LastOutboxID after a rejected row = %d, want 12 so the applier moves past it", got)
	}
}

func TestFilterThatFailsToCompileMatchesNothing(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(compileByPortfolio)}
	a.putTopic(1, "a")
	a.putSubscription(2, "s", "a", &pdsv1.SubscriptionFilters{PortfolioIds: []string{"p1", "p2"}})
	sub, _ := a.fsm.Current().Subscription(tenant, "s")
	if sub.CompileErr == nil || sub.Matcher != nil {
		t.Fatalf("subscription with a bad filter: CompileErr=%v Matcher=%v, want an error and no matcher", sub.CompileErr, sub.Matcher)
	}
}

type memorySink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memorySink) ID() string    { return "mem" }
func (s *memorySink) Cancel() error { s.cancelled = true; return nil }
func (s *memorySink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(compileByPortfolio)}
	a.putTopic(1, "portfolio/state/updated")
	a.putSubscription(2, "ui", "portfolio/state/updated", &pdsv1.SubscriptionFilters{PortfolioIds: []string{"p1"}})

	snap, err := a.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// A command applied after the capture must not leak into the snapshot.
	a.putTopic(3, "late")
	var sink memorySink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}

	restored := configfsm.New(compileByPortfolio)
	if err := restored.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	cfg := restored.Current()
	if cfg.Version != 2 || cfg.LastOutboxID != 2 {
		t.Fatalf("restored version/outbox = %d/%d, want 2/2", cfg.Version, cfg.LastOutboxID)
	}
	if _, ok := cfg.Topic(tenant, "late"); ok {
		t.Fatal("snapshot holds a topic applied after it was taken")
	}
	sub, ok := cfg.Subscription(tenant, "ui")
	if !ok || sub.Matcher == nil {
		t.Fatal("restored subscription ui missing or without compiled filter")
	}
	if len(cfg.SubscriptionsOfTopic(tenant, "portfolio/state/updated")) != 1 {
		t.Fatal("restored topic index lost its subscription")
	}
}

func TestWaitForVersion(t *testing.T) {
	a := &applier{t: t, fsm: configfsm.New(nil)}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg, err := a.fsm.WaitForVersion(ctx, 2)
		if err == nil && cfg.Version < 2 {
			err = errors.New("returned an older config")
		}
		done <- err
	}()
	a.putTopic(1, "a")
	a.putTopic(2, "b")
	if err := <-done; err != nil {
		t.Fatalf("WaitForVersion(2): %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.fsm.WaitForVersion(ctx, 99); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitForVersion with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestEncodeCommandRefusesOversizedPayload(t *testing.T) {
	big := &configv1.PutTopic{Topic: &pdsv1.Topic{TopicName: string(make([]byte, configfsm.MaxCommandBytes))}}
	if _, err := configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, big); !errors.Is(err, configfsm.ErrCommandTooLarge) {
		t.Fatalf("EncodeCommand of an oversized command = %v, want ErrCommandTooLarge", err)
	}
}
