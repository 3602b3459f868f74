package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/db/sqlcdb"
)

// Subscription statuses.
const (
	StatusActive = "active"
	StatusPaused = "paused"
)

// CreateSubscription inserts sub (subscription_id, topic_name, subscriber_workflow, filters, status; id
// and created_at are assigned; an empty status means active) and returns the stored row with the id of its
// outbox row. ErrAlreadyExists when the subscription_id is taken, ErrTopicMissing when the topic does not
// exist.
func (s *Store) CreateSubscription(ctx context.Context, tenantID string, sub *pdsv1.Subscription) (*pdsv1.Subscription, uint64, error) {
	filters, err := encodeFilters(sub.GetFilters())
	if err != nil {
		return nil, 0, fmt.Errorf("create subscription %q: %w", sub.GetSubscriptionId(), err)
	}
	status := sub.GetStatus()
	if status == "" {
		status = StatusActive
	}
	var created *pdsv1.Subscription
	outboxID, err := s.writeSubscription(ctx, "create", tenantID, sub.GetSubscriptionId(), ErrTopicMissing,
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioSubscription, error) {
			return q.CreateSubscription(ctx, sqlcdb.CreateSubscriptionParams{
				TenantID:           tenant,
				SubscriptionID:     sub.GetSubscriptionId(),
				TopicName:          sub.GetTopicName(),
				SubscriberWorkflow: sub.GetSubscriberWorkflow(),
				Filters:            filters,
				Status:             status,
			})
		}, &created)
	return created, outboxID, err
}

// UpdateSubscription changes the subscriber_workflow and filters of the subscription named
// sub.subscription_id; nil filters clear them. ErrNotFound when it does not exist.
func (s *Store) UpdateSubscription(ctx context.Context, tenantID string, sub *pdsv1.Subscription) (*pdsv1.Subscription, uint64, error) {
	filters, err := encodeFilters(sub.GetFilters())
	if err != nil {
		return nil, 0, fmt.Errorf("update subscription %q: %w", sub.GetSubscriptionId(), err)
	}
	var updated *pdsv1.Subscription
	outboxID, err := s.writeSubscription(ctx, "update", tenantID, sub.GetSubscriptionId(), nil,
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioSubscription, error) {
			return q.UpdateSubscription(ctx, sqlcdb.UpdateSubscriptionParams{
				TenantID:           tenant,
				SubscriptionID:     sub.GetSubscriptionId(),
				SubscriberWorkflow: sub.GetSubscriberWorkflow(),
				Filters:            filters,
			})
		}, &updated)
	return updated, outboxID, err
}

// SetSubscriptionStatus sets the status (StatusActive or StatusPaused). ErrNotFound when the subscription
// does not exist.
func (s *Store) SetSubscriptionStatus(ctx context.Context, tenantID, subscriptionID, status string) (*pdsv1.Subscription, uint64, error) {
	var updated *pdsv1.Subscription
	outboxID, err := s.writeSubscription(ctx, "set status of", tenantID, subscriptionID, nil,
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioSubscription, error) {
			return q.SetSubscriptionStatus(ctx, sqlcdb.SetSubscriptionStatusParams{
				TenantID: tenant, SubscriptionID: subscriptionID, Status: status,
			})
		}, &updated)
	return updated, outboxID, err
}

// DeleteSubscription removes a subscription and returns the id of its outbox row. ErrNotFound when it
// does not exist.
func (s *Store) DeleteSubscription(ctx context.Context, tenantID, subscriptionID string) (uint64, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return 0, fmt.Errorf("delete subscription %q: %w", subscriptionID, err)
	}
	outboxID, err := s.write(ctx, func(ctx context.Context, q *sqlcdb.Queries, outboxID uint64) ([]byte, error) {
		deleted, err := q.DeleteSubscription(ctx, sqlcdb.DeleteSubscriptionParams{TenantID: tenant, SubscriptionID: subscriptionID})
		if err != nil {
			return nil, classify(err, nil)
		}
		if deleted == 0 {
			return nil, ErrNotFound
		}
		return configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION, &configv1.DeleteSubscription{
			OutboxId:       outboxID,
			TenantId:       tenantID,
			SubscriptionId: subscriptionID,
		})
	})
	if err != nil {
		return 0, fmt.Errorf("delete subscription %q: %w", subscriptionID, err)
	}
	return outboxID, nil
}

// GetSubscription returns one subscription. ErrNotFound when it does not exist.
func (s *Store) GetSubscription(ctx context.Context, tenantID, subscriptionID string) (*pdsv1.Subscription, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return nil, fmt.Errorf("get subscription %q: %w", subscriptionID, err)
	}
	row, err := s.queries.GetSubscription(ctx, sqlcdb.GetSubscriptionParams{TenantID: tenant, SubscriptionID: subscriptionID})
	if err != nil {
		return nil, fmt.Errorf("get subscription %q: %w", subscriptionID, classify(err, nil))
	}
	sub, err := subscriptionFromRow(row)
	if err != nil {
		return nil, fmt.Errorf("get subscription %q: %w", subscriptionID, err)
	}
	return sub, nil
}

// ListSubscriptions returns the tenant's subscriptions ordered by subscription_id; a non-empty topicName
// keeps only that topic's.
func (s *Store) ListSubscriptions(ctx context.Context, tenantID, topicName string) ([]*pdsv1.Subscription, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	params := sqlcdb.ListSubscriptionsParams{TenantID: tenant}
	if topicName != "" {
		params.TopicName = pgtype.Text{String: topicName, Valid: true}
	}
	rows, err := s.queries.ListSubscriptions(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	subs := make([]*pdsv1.Subscription, 0, len(rows))
	for _, row := range rows {
		sub, err := subscriptionFromRow(row)
		if err != nil {
			return nil, fmt.Errorf("list subscriptions: %w", err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// writeSubscription runs a subscription row change and records a PutSubscription command with the
// resulting row. onForeignKey is the error a foreign-key violation stands for.
func (s *Store) writeSubscription(ctx context.Context, verb, tenantID, subscriptionID string, onForeignKey error,
	rowChange func(context.Context, *sqlcdb.Queries, pgtype.UUID) (sqlcdb.PortfolioSubscription, error),
	result **pdsv1.Subscription,
) (uint64, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return 0, fmt.Errorf("%s subscription %q: %w", verb, subscriptionID, err)
	}
	outboxID, err := s.write(ctx, func(ctx context.Context, q *sqlcdb.Queries, outboxID uint64) ([]byte, error) {
		row, err := rowChange(ctx, q, tenant)
		if err != nil {
			return nil, classify(err, onForeignKey)
		}
		sub, err := subscriptionFromRow(row)
		if err != nil {
			return nil, err
		}
		*result = sub
		return configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION, &configv1.PutSubscription{
			OutboxId:     outboxID,
			Subscription: sub,
		})
	})
	if err != nil {
		*result = nil
		return 0, fmt.Errorf("%s subscription %q: %w", verb, subscriptionID, err)
	}
	return outboxID, nil
}
