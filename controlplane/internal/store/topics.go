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

// CreateTopic inserts topic (topic_name, data_type, partitions, enabled; id and created_at are assigned)
// and returns the stored row with the id of its outbox row. Input is expected to be validated: partitions
// outside 1..128 violate a check constraint. ErrAlreadyExists when the name is taken.
func (s *Store) CreateTopic(ctx context.Context, tenantID string, topic *pdsv1.Topic) (*pdsv1.Topic, uint64, error) {
	var created *pdsv1.Topic
	outboxID, err := s.writeTopic(ctx, "create", tenantID, topic.GetTopicName(),
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioTopic, error) {
			return q.CreateTopic(ctx, sqlcdb.CreateTopicParams{
				TenantID:   tenant,
				TopicName:  topic.GetTopicName(),
				DataType:   dataTypeName(topic.GetDataType()),
				Partitions: topic.GetPartitions(),
				Enabled:    topic.GetEnabled(),
			})
		}, &created)
	return created, outboxID, err
}

// UpdateTopic changes the data_type and partitions of the topic named topic.topic_name; partitions 0
// keeps the current count. Partitions may only grow: fewer than the current count fails with a
// *PartitionsShrinkError (ErrPartitionsShrink). ErrNotFound when the topic does not exist.
func (s *Store) UpdateTopic(ctx context.Context, tenantID string, topic *pdsv1.Topic) (*pdsv1.Topic, uint64, error) {
	var updated *pdsv1.Topic
	outboxID, err := s.writeTopic(ctx, "update", tenantID, topic.GetTopicName(),
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioTopic, error) {
			current, err := q.GetTopicForUpdate(ctx, sqlcdb.GetTopicForUpdateParams{TenantID: tenant, TopicName: topic.GetTopicName()})
			if err != nil {
				return current, err
			}
			partitions := topic.GetPartitions()
			if partitions == 0 {
				partitions = current.Partitions
			}
			if partitions < current.Partitions {
				return current, &PartitionsShrinkError{Current: current.Partitions, Requested: partitions}
			}
			return q.UpdateTopic(ctx, sqlcdb.UpdateTopicParams{
				TenantID:   tenant,
				TopicName:  topic.GetTopicName(),
				DataType:   dataTypeName(topic.GetDataType()),
				Partitions: partitions,
			})
		}, &updated)
	return updated, outboxID, err
}

// SetTopicEnabled switches a topic on or off. ErrNotFound when it does not exist.
func (s *Store) SetTopicEnabled(ctx context.Context, tenantID, topicName string, enabled bool) (*pdsv1.Topic, uint64, error) {
	var updated *pdsv1.Topic
	outboxID, err := s.writeTopic(ctx, "set enabled of", tenantID, topicName,
		func(ctx context.Context, q *sqlcdb.Queries, tenant pgtype.UUID) (sqlcdb.PortfolioTopic, error) {
			return q.SetTopicEnabled(ctx, sqlcdb.SetTopicEnabledParams{TenantID: tenant, TopicName: topicName, Enabled: enabled})
		}, &updated)
	return updated, outboxID, err
}

// DeleteTopic removes a topic and returns the id of its outbox row. ErrNotFound when it does not exist,
// ErrTopicInUse while subscriptions read it.
func (s *Store) DeleteTopic(ctx context.Context, tenantID, topicName string) (uint64, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return 0, fmt.Errorf("delete topic %q: %w", topicName, err)
	}
	outboxID, err := s.write(ctx, func(ctx context.Context, q *sqlcdb.Queries, outboxID uint64) ([]byte, error) {
		deleted, err := q.DeleteTopic(ctx, sqlcdb.DeleteTopicParams{TenantID: tenant, TopicName: topicName})
		if err != nil {
			return nil, classify(err, ErrTopicInUse)
		}
		if deleted == 0 {
			return nil, ErrNotFound
		}
		return configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC, &configv1.DeleteTopic{
			OutboxId:  outboxID,
			TenantId:  tenantID,
			TopicName: topicName,
		})
	})
	if err != nil {
		return 0, fmt.Errorf("delete topic %q: %w", topicName, err)
	}
	return outboxID, nil
}

// GetTopic returns one topic with its broker status (see brokerStatus). ErrNotFound when it does not exist.
func (s *Store) GetTopic(ctx context.Context, tenantID, topicName string) (*pdsv1.Topic, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return nil, fmt.Errorf("get topic %q: %w", topicName, err)
	}
	row, err := s.queries.GetTopic(ctx, sqlcdb.GetTopicParams{TenantID: tenant, TopicName: topicName})
	if err != nil {
		return nil, fmt.Errorf("get topic %q: %w", topicName, classify(err, nil))
	}
	topic, err := topicFromRow(row)
	if err != nil {
		return nil, fmt.Errorf("get topic %q: %w", topicName, err)
	}
	statusRows, err := s.queries.ListTopicBrokerStatusOfTopic(ctx, row.ID)
	if err != nil {
		return nil, fmt.Errorf("get topic %q: broker status: %w", topicName, err)
	}
	if topic.BrokerStatus, err = brokerStatus(topic, statusRows); err != nil {
		return nil, fmt.Errorf("get topic %q: %w", topicName, err)
	}
	return topic, nil
}

// ListTopics returns the tenant's topics ordered by name, each with its broker status (see brokerStatus).
func (s *Store) ListTopics(ctx context.Context, tenantID string) ([]*pdsv1.Topic, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	rows, err := s.queries.ListTopics(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	statusRows, err := s.queries.ListTopicBrokerStatusOfTenant(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("list topics: broker status: %w", err)
	}
	statusOf := make(map[pgtype.UUID][]sqlcdb.TopicBrokerStatus, len(rows))
	for _, r := range statusRows {
		statusOf[r.TopicID] = append(statusOf[r.TopicID], r)
	}
	topics := make([]*pdsv1.Topic, 0, len(rows))
	for _, row := range rows {
		topic, err := topicFromRow(row)
		if err != nil {
			return nil, fmt.Errorf("list topics: %w", err)
		}
		if topic.BrokerStatus, err = brokerStatus(topic, statusOf[row.ID]); err != nil {
			return nil, fmt.Errorf("list topics: %w", err)
		}
		topics = append(topics, topic)
	}
	return topics, nil
}

// writeTopic runs a topic row change and records a PutTopic command with the resulting row; the row is
// returned with its broker status as of the commit.
func (s *Store) writeTopic(ctx context.Context, verb, tenantID, topicName string,
	rowChange func(context.Context, *sqlcdb.Queries, pgtype.UUID) (sqlcdb.PortfolioTopic, error),
	result **pdsv1.Topic,
) (uint64, error) {
	tenant, err := parseTenant(tenantID)
	if err != nil {
		return 0, fmt.Errorf("%s topic %q: %w", verb, topicName, err)
	}
	outboxID, err := s.write(ctx, func(ctx context.Context, q *sqlcdb.Queries, outboxID uint64) ([]byte, error) {
		row, err := rowChange(ctx, q, tenant)
		if err != nil {
			return nil, classify(err, nil)
		}
		topic, err := topicFromRow(row)
		if err != nil {
			return nil, err
		}
		*result = topic
		return configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{
			OutboxId: outboxID,
			Topic:    topic,
		})
	})
	if err != nil {
		*result = nil
		return 0, fmt.Errorf("%s topic %q: %w", verb, topicName, err)
	}
	// The command above is already encoded: the status, an observation, stays out of the replicated config.
	statusRows, err := s.queries.ListTopicBrokerStatusOfTopic(ctx, uuidOf((*result).GetId()))
	if err == nil {
		(*result).BrokerStatus, err = brokerStatus(*result, statusRows)
	}
	if err != nil {
		// The write is committed; only the observation is missing, so answer without it.
		(*result).BrokerStatus = nil
	}
	return outboxID, nil
}
