package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
)

// brokerSyncRetry is the pause before a failed reconciliation is tried again.
const brokerSyncRetry = time.Second

// SyncBroker keeps the broker's topics and subscriptions in step with the replicated configuration until
// ctx ends: on start it ensures every topic exists with its partitions; on each config change it ensures
// new or grown topics and deletes the broker topics and durable subscriptions the config no longer has.
// A failed step is retried until it succeeds; every step is idempotent, so several nodes may run it.
func SyncBroker(ctx context.Context, fsm *configfsm.FSM, b broker.Broker, logger *slog.Logger) {
	var applied *configfsm.Config // nil: nothing reconciled yet
	var retry <-chan time.Time
	for {
		changed := fsm.Changed()
		current := fsm.Current()
		if current != applied {
			if err := reconcileBroker(ctx, applied, current, b); err != nil {
				if ctx.Err() != nil {
					return
				}
				logger.Warn("sync broker with configuration failed; retrying", "config_version", current.Version, "error", err)
				retry = time.After(brokerSyncRetry)
			} else {
				applied, retry = current, nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// reconcileBroker applies the difference between two configs to the broker. prev nil means "unknown":
// every topic of next is ensured and nothing is deleted.
func reconcileBroker(ctx context.Context, prev, next *configfsm.Config, b broker.Broker) error {
	var errs []error
	if prev != nil {
		for _, sub := range prev.Subscriptions() {
			p := sub.Proto
			if still, ok := next.Subscription(p.GetTenantId(), p.GetSubscriptionId()); ok && still.Proto.GetId() == p.GetId() {
				continue
			}
			topic, ok := prev.Topic(p.GetTenantId(), p.GetTopicName())
			if !ok {
				continue // its topic was already gone; deleting the topic removed the subscription
			}
			ref := broker.SubscriptionRef{TenantID: p.GetTenantId(), ID: p.GetId(), Topic: topicRef(topic)}
			if err := b.DeleteSubscription(ctx, ref); err != nil {
				errs = append(errs, fmt.Errorf("delete subscription %q at the broker: %w", p.GetSubscriptionId(), err))
			}
		}
		for _, t := range prev.Topics() {
			if still, ok := next.Topic(t.GetTenantId(), t.GetTopicName()); ok && still.GetId() == t.GetId() {
				continue
			}
			if err := b.DeleteTopic(ctx, topicRef(t)); err != nil {
				errs = append(errs, fmt.Errorf("delete topic %q at the broker: %w", t.GetTopicName(), err))
			}
		}
	}
	for _, t := range next.Topics() {
		if prev != nil {
			if old, ok := prev.Topic(t.GetTenantId(), t.GetTopicName()); ok && old.GetId() == t.GetId() && old.GetPartitions() == t.GetPartitions() {
				continue
			}
		}
		if err := b.EnsureTopic(ctx, topicRef(t)); err != nil {
			errs = append(errs, fmt.Errorf("ensure topic %q at the broker: %w", t.GetTopicName(), err))
		}
	}
	return errors.Join(errs...)
}

func topicRef(t *pdsv1.Topic) broker.TopicRef {
	return broker.TopicRef{
		TenantID:   t.GetTenantId(),
		ID:         t.GetId(),
		Name:       t.GetTopicName(),
		Partitions: max(int(t.GetPartitions()), 1),
	}
}
