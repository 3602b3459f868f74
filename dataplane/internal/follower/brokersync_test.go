package follower_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/follower"
	"google.golang.org/protobuf/proto"
)

func TestSyncBrokerCreatesAndDeletesTopicsWithTheConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })

	fsm := configfsm.New(filter.Compiler)
	var index uint64
	apply := func(kind configv1.CommandType, msg proto.Message) {
		data, err := configfsm.EncodeCommand(kind, msg)
		if err != nil {
			t.Fatalf("encode %s: %v", kind, err)
		}
		index++
		if res := fsm.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}); res != nil {
			t.Fatalf("apply %s: %v", kind, res)
		}
	}
	topic := &pdsv1.Topic{Id: uuid.NewString(), TenantId: tenancy.DefaultTenantID, TopicName: "portfolio/cash/updated",
		DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT, Partitions: 2, Enabled: true}
	ref := broker.TopicRef{TenantID: topic.GetTenantId(), ID: topic.GetId(), Name: topic.GetTopicName(), Partitions: 2}
	// Publishing succeeds exactly while the topic exists at the broker.
	publishes := func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		return b.Publish(pctx, ref, []broker.Record{{Partition: 1, Key: "p.cash.update", EventID: uuid.NewString(), Value: []byte("x")}}) == nil
	}

	syncCtx, stopSync := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		follower.SyncBroker(syncCtx, fsm, b, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { stopSync(); <-done })

	apply(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{Topic: topic})
	waitFor(t, "the topic in the config exists at the broker", publishes)

	apply(configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC, &configv1.DeleteTopic{TenantId: topic.GetTenantId(), TopicName: topic.GetTopicName()})
	waitFor(t, "the topic removed from the config is deleted at the broker", func() bool { return !publishes() })
}
