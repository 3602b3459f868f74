package store_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const tenant = tenancy.DefaultTenantID

var createdAtPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func openStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	databaseURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := store.Open(ctx, databaseURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s, databaseURL
}

func stateTopic(name string) *pdsv1.Topic {
	return &pdsv1.Topic{TopicName: name, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 4, Enabled: true}
}

func mustCreateTopic(t *testing.T, s *store.Store, name string) *pdsv1.Topic {
	t.Helper()
	topic, _, err := s.CreateTopic(context.Background(), tenant, stateTopic(name))
	if err != nil {
		t.Fatalf("create topic %q: %v", name, err)
	}
	return topic
}

func subscription(id, topic string) *pdsv1.Subscription {
	return &pdsv1.Subscription{
		SubscriptionId:     id,
		TopicName:          topic,
		SubscriberWorkflow: "rebalancer",
		Filters: &pdsv1.SubscriptionFilters{
			PortfolioIds:       []string{"P-1", "P-2"},
			DataTypes:          []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE},
			RoutingKeyPatterns: []string{"P-*.state.update"},
			MinPriority:        2,
			Cel:                "event.data.total_value > 1000000.0",
		},
	}
}

// outbox returns every outbox entry in id order.
func outbox(t *testing.T, s *store.Store) []store.OutboxEntry {
	t.Helper()
	entries, err := s.ListOutboxAfter(context.Background(), 0, 10_000)
	if err != nil {
		t.Fatalf("list outbox: %v", err)
	}
	return entries
}

func decode(t *testing.T, command []byte) (configv1.CommandType, proto.Message) {
	t.Helper()
	kind, payload, err := configfsm.DecodeCommandType(command)
	if err != nil {
		t.Fatalf("decode outbox command: %v", err)
	}
	var msg proto.Message
	switch kind {
	case configv1.CommandType_COMMAND_TYPE_PUT_TOPIC:
		msg = &configv1.PutTopic{}
	case configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC:
		msg = &configv1.DeleteTopic{}
	case configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION:
		msg = &configv1.PutSubscription{}
	case configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION:
		msg = &configv1.DeleteSubscription{}
	default:
		t.Fatalf("outbox command of unknown type %d", kind)
	}
	if err := proto.Unmarshal(payload, msg); err != nil {
		t.Fatalf("decode %s payload: %v", kind, err)
	}
	return kind, msg
}

func TestCreateTopicAssignsIdentityAndReadsBack(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()

	created, outboxID, err := s.CreateTopic(ctx, tenant, stateTopic("portfolio/state/updated"))
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	if _, err := uuid.Parse(created.GetId()); err != nil {
		t.Errorf("created topic id %q is not a UUID", created.GetId())
	}
	if created.GetTenantId() != tenant {
		t.Errorf("tenant_id = %q, want %q", created.GetTenantId(), tenant)
	}
	if !createdAtPattern.MatchString(created.GetCreatedAt()) {
		t.Errorf("created_at = %q, want RFC 3339 UTC with milliseconds", created.GetCreatedAt())
	}
	if outboxID == 0 {
		t.Errorf("outbox id = 0, want the id of the outbox row")
	}
	got, err := s.GetTopic(ctx, tenant, "portfolio/state/updated")
	if err != nil {
		t.Fatalf("GetTopic: %v", err)
	}
	if state := got.GetBrokerStatus().GetState(); state != pdsv1.BrokerState_BROKER_STATE_PENDING {
		t.Errorf("GetTopic broker_status.state = %s for a topic nobody reported, want PENDING", state)
	}
	if state := created.GetBrokerStatus().GetState(); state != pdsv1.BrokerState_BROKER_STATE_PENDING {
		t.Errorf("CreateTopic broker_status.state = %s for a new topic, want PENDING", state)
	}
	// The status is an observation added on read, not part of the stored row.
	got.BrokerStatus, created.BrokerStatus = nil, nil
	if !proto.Equal(created, got) {
		t.Errorf("GetTopic = %v, want the created row %v", got, created)
	}
}

func TestStoredColumnsUseSpecificationForms(t *testing.T) {
	t.Parallel()
	s, databaseURL := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "t")
	if _, _, err := s.CreateSubscription(ctx, tenant, subscription("sub-1", "t")); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}

	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var dataType string
	if err := conn.QueryRow(ctx, "SELECT data_type FROM portfolio_topics WHERE topic_name = 't'").Scan(&dataType); err != nil {
		t.Fatalf("read data_type: %v", err)
	}
	if dataType != "PORTFOLIO_STATE" {
		t.Errorf("data_type column = %q, want the enum name PORTFOLIO_STATE", dataType)
	}
	var portfolioIDs, celExpr string
	if err := conn.QueryRow(ctx,
		"SELECT filters->>'portfolio_ids', filters->>'cel' FROM portfolio_subscriptions WHERE subscription_id = 'sub-1'",
	).Scan(&portfolioIDs, &celExpr); err != nil {
		t.Fatalf("read filters with snake_case keys: %v", err)
	}
	if portfolioIDs != `["P-1", "P-2"]` || celExpr != "event.data.total_value > 1000000.0" {
		t.Errorf("filters JSONB portfolio_ids=%s cel=%q, want the stored filters under snake_case keys", portfolioIDs, celExpr)
	}
}

func TestListTopicsOrderedByName(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	for _, name := range []string{"c", "a", "b"} {
		mustCreateTopic(t, s, name)
	}
	topics, err := s.ListTopics(context.Background(), tenant)
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	var names []string
	for _, topic := range topics {
		names = append(names, topic.GetTopicName())
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(names, want) {
		t.Errorf("topic names = %v, want %v", names, want)
	}
}

func TestTopicWriteErrors(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "taken")
	mustCreateTopic(t, s, "read")
	if _, _, err := s.CreateSubscription(ctx, tenant, subscription("reader", "read")); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}

	tests := []struct {
		name  string
		write func() error
		want  error
	}{
		{"create with a taken name", func() error {
			_, _, err := s.CreateTopic(ctx, tenant, stateTopic("taken"))
			return err
		}, store.ErrAlreadyExists},
		{"update a missing topic", func() error {
			_, _, err := s.UpdateTopic(ctx, tenant, stateTopic("missing"))
			return err
		}, store.ErrNotFound},
		{"shrink partitions", func() error {
			topic := stateTopic("taken")
			topic.Partitions = 3
			_, _, err := s.UpdateTopic(ctx, tenant, topic)
			return err
		}, store.ErrPartitionsShrink},
		{"enable a missing topic", func() error {
			_, _, err := s.SetTopicEnabled(ctx, tenant, "missing", true)
			return err
		}, store.ErrNotFound},
		{"delete a missing topic", func() error {
			_, err := s.DeleteTopic(ctx, tenant, "missing")
			return err
		}, store.ErrNotFound},
		{"delete a topic with subscriptions", func() error {
			_, err := s.DeleteTopic(ctx, tenant, "read")
			return err
		}, store.ErrTopicInUse},
		{"get a missing topic", func() error {
			_, err := s.GetTopic(ctx, tenant, "missing")
			return err
		}, store.ErrNotFound},
	}
	before := len(outbox(t, s))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
	if after := len(outbox(t, s)); after != before {
		t.Errorf("failed writes left %d outbox rows, want none", after-before)
	}
}

func TestUpdateTopicGrowsPartitionsAndChangesType(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	created := mustCreateTopic(t, s, "t")

	updated, _, err := s.UpdateTopic(ctx, tenant, &pdsv1.Topic{
		TopicName: "t", DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT, Partitions: 8,
	})
	if err != nil {
		t.Fatalf("UpdateTopic: %v", err)
	}
	if updated.GetPartitions() != 8 || updated.GetDataType() != pdsv1.PortfolioDataType_CASH_MANAGEMENT {
		t.Errorf("updated topic partitions=%d data_type=%s, want 8 CASH_MANAGEMENT", updated.GetPartitions(), updated.GetDataType())
	}
	if updated.GetId() != created.GetId() || updated.GetCreatedAt() != created.GetCreatedAt() || !updated.GetEnabled() {
		t.Errorf("update changed id, created_at or enabled: before %v, after %v", created, updated)
	}
}

func TestUpdateTopicWithZeroPartitionsKeepsCount(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	mustCreateTopic(t, s, "t") // 4 partitions
	updated, _, err := s.UpdateTopic(context.Background(), tenant, &pdsv1.Topic{
		TopicName: "t", DataType: pdsv1.PortfolioDataType_REBALANCING,
	})
	if err != nil {
		t.Fatalf("UpdateTopic: %v", err)
	}
	if updated.GetPartitions() != 4 {
		t.Errorf("partitions = %d after an update with 0, want the current 4", updated.GetPartitions())
	}
}

func TestSubscriptionLifecycle(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "t")

	created, _, err := s.CreateSubscription(ctx, tenant, subscription("sub-1", "t"))
	if err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	if created.GetStatus() != store.StatusActive {
		t.Errorf("status of a new subscription = %q, want %q", created.GetStatus(), store.StatusActive)
	}
	if !proto.Equal(created.GetFilters(), subscription("sub-1", "t").GetFilters()) {
		t.Errorf("filters did not round-trip: got %v", created.GetFilters())
	}
	got, err := s.GetSubscription(ctx, tenant, "sub-1")
	if err != nil {
		t.Fatalf("GetSubscription: %v", err)
	}
	if !proto.Equal(created, got) {
		t.Errorf("GetSubscription = %v, want the created row %v", got, created)
	}

	updated, _, err := s.UpdateSubscription(ctx, tenant, &pdsv1.Subscription{SubscriptionId: "sub-1", SubscriberWorkflow: "risk"})
	if err != nil {
		t.Fatalf("UpdateSubscription: %v", err)
	}
	if updated.GetSubscriberWorkflow() != "risk" || updated.GetFilters() != nil || updated.GetTopicName() != "t" {
		t.Errorf("after update workflow=%q filters=%v topic=%q, want risk, no filters, t",
			updated.GetSubscriberWorkflow(), updated.GetFilters(), updated.GetTopicName())
	}

	paused, _, err := s.SetSubscriptionStatus(ctx, tenant, "sub-1", store.StatusPaused)
	if err != nil {
		t.Fatalf("SetSubscriptionStatus: %v", err)
	}
	if paused.GetStatus() != store.StatusPaused {
		t.Errorf("status = %q, want paused", paused.GetStatus())
	}

	if _, err := s.DeleteSubscription(ctx, tenant, "sub-1"); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	if _, err := s.GetSubscription(ctx, tenant, "sub-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSubscription after delete: error = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteTopic(ctx, tenant, "t"); err != nil {
		t.Errorf("DeleteTopic once its last subscription is gone: %v", err)
	}
}

func TestSubscriptionWriteErrors(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "t")
	if _, _, err := s.CreateSubscription(ctx, tenant, subscription("taken", "t")); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}

	tests := []struct {
		name  string
		write func() error
		want  error
	}{
		{"create on a missing topic", func() error {
			_, _, err := s.CreateSubscription(ctx, tenant, subscription("new", "missing"))
			return err
		}, store.ErrTopicMissing},
		{"create with a taken id", func() error {
			_, _, err := s.CreateSubscription(ctx, tenant, subscription("taken", "t"))
			return err
		}, store.ErrAlreadyExists},
		{"update a missing subscription", func() error {
			_, _, err := s.UpdateSubscription(ctx, tenant, subscription("missing", "t"))
			return err
		}, store.ErrNotFound},
		{"pause a missing subscription", func() error {
			_, _, err := s.SetSubscriptionStatus(ctx, tenant, "missing", store.StatusPaused)
			return err
		}, store.ErrNotFound},
		{"delete a missing subscription", func() error {
			_, err := s.DeleteSubscription(ctx, tenant, "missing")
			return err
		}, store.ErrNotFound},
	}
	before := len(outbox(t, s))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
	if after := len(outbox(t, s)); after != before {
		t.Errorf("failed writes left %d outbox rows, want none", after-before)
	}
}

func TestListSubscriptionsByTopic(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "a")
	mustCreateTopic(t, s, "b")
	for _, sub := range []*pdsv1.Subscription{subscription("s3", "a"), subscription("s1", "b"), subscription("s2", "a")} {
		if _, _, err := s.CreateSubscription(ctx, tenant, sub); err != nil {
			t.Fatalf("CreateSubscription: %v", err)
		}
	}
	tests := []struct {
		name  string
		topic string
		want  []string
	}{
		{"all topics", "", []string{"s1", "s2", "s3"}},
		{"one topic", "a", []string{"s2", "s3"}},
		{"topic without subscriptions", "none", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subs, err := s.ListSubscriptions(ctx, tenant, tt.topic)
			if err != nil {
				t.Fatalf("ListSubscriptions: %v", err)
			}
			var ids []string
			for _, sub := range subs {
				ids = append(ids, sub.GetSubscriptionId())
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("subscription ids = %v, want %v", ids, tt.want)
			}
		})
	}
}

func withoutBrokerStatus(topic *pdsv1.Topic) *pdsv1.Topic {
	out := proto.CloneOf(topic)
	out.BrokerStatus = nil
	return out
}

func TestEveryWriteRecordsItsCommandInOrder(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()

	topic, topicOutbox, err := s.CreateTopic(ctx, tenant, stateTopic("t"))
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	disabled, disableOutbox, err := s.SetTopicEnabled(ctx, tenant, "t", false)
	if err != nil {
		t.Fatalf("SetTopicEnabled: %v", err)
	}
	sub, subOutbox, err := s.CreateSubscription(ctx, tenant, subscription("sub-1", "t"))
	if err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	deleteSubOutbox, err := s.DeleteSubscription(ctx, tenant, "sub-1")
	if err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	deleteTopicOutbox, err := s.DeleteTopic(ctx, tenant, "t")
	if err != nil {
		t.Fatalf("DeleteTopic: %v", err)
	}

	want := []struct {
		id  uint64
		msg proto.Message
	}{
		// The broker status a write answers with is an observation and never enters the replicated command.
		{topicOutbox, &configv1.PutTopic{OutboxId: topicOutbox, Topic: withoutBrokerStatus(topic)}},
		{disableOutbox, &configv1.PutTopic{OutboxId: disableOutbox, Topic: withoutBrokerStatus(disabled)}},
		{subOutbox, &configv1.PutSubscription{OutboxId: subOutbox, Subscription: sub}},
		{deleteSubOutbox, &configv1.DeleteSubscription{OutboxId: deleteSubOutbox, TenantId: tenant, SubscriptionId: "sub-1"}},
		{deleteTopicOutbox, &configv1.DeleteTopic{OutboxId: deleteTopicOutbox, TenantId: tenant, TopicName: "t"}},
	}
	entries := outbox(t, s)
	if len(entries) != len(want) {
		t.Fatalf("outbox has %d rows after %d writes", len(entries), len(want))
	}
	for i, entry := range entries {
		if entry.ID != want[i].id {
			t.Errorf("outbox row %d has id %d, the write returned %d", i, entry.ID, want[i].id)
		}
		if i > 0 && entry.ID <= entries[i-1].ID {
			t.Errorf("outbox ids not increasing: %d after %d", entry.ID, entries[i-1].ID)
		}
		_, got := decode(t, entry.Command)
		if !proto.Equal(want[i].msg, got) {
			t.Errorf("outbox row %d command = %v, want %v", entry.ID, got, want[i].msg)
		}
	}
}

func TestOutboxPagingAndPruning(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	var ids []uint64
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		_, id, err := s.CreateTopic(ctx, tenant, stateTopic(name))
		if err != nil {
			t.Fatalf("CreateTopic: %v", err)
		}
		ids = append(ids, id)
	}

	page, err := s.ListOutboxAfter(ctx, ids[1], 2)
	if err != nil {
		t.Fatalf("ListOutboxAfter: %v", err)
	}
	if len(page) != 2 || page[0].ID != ids[2] || page[1].ID != ids[3] {
		t.Errorf("ListOutboxAfter(%d, 2) = %v, want ids %v", ids[1], page, ids[2:4])
	}

	pruned, err := s.PruneOutbox(ctx, ids[2])
	if err != nil {
		t.Fatalf("PruneOutbox: %v", err)
	}
	if pruned != 3 {
		t.Errorf("PruneOutbox(%d) deleted %d rows, want 3", ids[2], pruned)
	}
	rest := outbox(t, s)
	if len(rest) != 2 || rest[0].ID != ids[3] {
		t.Errorf("after pruning, outbox = %v, want ids %v", rest, ids[3:])
	}
}

// Concurrent writers must still produce outbox rows whose ids are the ones their commands carry, one per
// write, so the raft leader applies each change exactly once.
func TestConcurrentWritesEachGetTheirOwnOutboxRow(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	const writers = 20
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, _, errs[i] = s.CreateTopic(ctx, tenant, stateTopic(uuid.NewString()))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	entries := outbox(t, s)
	if len(entries) != writers {
		t.Fatalf("outbox has %d rows after %d writes", len(entries), writers)
	}
	for _, entry := range entries {
		_, msg := decode(t, entry.Command)
		if got := msg.(*configv1.PutTopic).GetOutboxId(); got != entry.ID {
			t.Errorf("outbox row %d carries outbox_id %d", entry.ID, got)
		}
	}
}

// Applying the outbox to the replicated config state machine must reproduce exactly what the store holds.
func TestOutboxReplayReproducesStoreContents(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	ctx := context.Background()
	mustCreateTopic(t, s, "a")
	mustCreateTopic(t, s, "b")
	if _, _, err := s.UpdateTopic(ctx, tenant, &pdsv1.Topic{TopicName: "a", DataType: pdsv1.PortfolioDataType_RISK_BUDGET, Partitions: 16}); err != nil {
		t.Fatalf("UpdateTopic: %v", err)
	}
	if _, _, err := s.CreateSubscription(ctx, tenant, subscription("s1", "a")); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	if _, _, err := s.CreateSubscription(ctx, tenant, subscription("s2", "b")); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	if _, _, err := s.SetSubscriptionStatus(ctx, tenant, "s2", store.StatusPaused); err != nil {
		t.Fatalf("SetSubscriptionStatus: %v", err)
	}
	if _, err := s.DeleteSubscription(ctx, tenant, "s1"); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}

	fsm := configfsm.New(nil)
	for i, entry := range outbox(t, s) {
		if res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: entry.Command}); res != nil {
			t.Fatalf("apply outbox row %d: %v", entry.ID, res)
		}
	}
	cfg := fsm.Current()

	topics, err := s.ListTopics(ctx, tenant)
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	for _, topic := range topics {
		topic.BrokerStatus = nil // broker observations are deliberately not replicated
	}
	if !protoSlicesEqual(topics, cfg.Topics()) {
		t.Errorf("replicated topics %v differ from the store's %v", cfg.Topics(), topics)
	}
	subs, err := s.ListSubscriptions(ctx, tenant, "")
	if err != nil {
		t.Fatalf("ListSubscriptions: %v", err)
	}
	var replicated []*pdsv1.Subscription
	for _, sub := range cfg.Subscriptions() {
		replicated = append(replicated, sub.Proto)
	}
	if !protoSlicesEqual(subs, replicated) {
		t.Errorf("replicated subscriptions %v differ from the store's %v", replicated, subs)
	}
}

func protoSlicesEqual[M proto.Message](a, b []M) bool {
	return slices.EqualFunc(a, b, func(x, y M) bool { return proto.Equal(x, y) })
}
