package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/db/sqlcdb"
)

// RecordTopicStatus stores what node nodeID's broker driver last did with each reported topic, replacing
// that node's previous report for the topic. Reports are observations, not configuration: they bypass the
// outbox and raft. A report whose topic_id no longer names the tenant's topic of that name (deleted, or
// deleted and recreated) is skipped. It returns how many reports were stored. Input is expected to be
// validated (ids are UUIDs, state is PENDING, READY or FAILED, message and partitions within the column
// limits); all reports are stored in one transaction.
func (s *Store) RecordTopicStatus(ctx context.Context, nodeID string, reports []*pdsv1.TopicStatusReport) (int, error) {
	params := make([]sqlcdb.UpsertTopicBrokerStatusParams, 0, len(reports))
	for i, r := range reports {
		tenant, err := parseTenant(r.GetTenantId())
		if err != nil {
			return 0, fmt.Errorf("record topic status of node %q: report %d: %w", nodeID, i, err)
		}
		var topicID pgtype.UUID
		if err := topicID.Scan(r.GetTopicId()); err != nil {
			return 0, fmt.Errorf("record topic status of node %q: report %d: topic id %q: %w", nodeID, i, r.GetTopicId(), err)
		}
		params = append(params, sqlcdb.UpsertTopicBrokerStatusParams{
			NodeID:     nodeID,
			State:      r.GetState().String(),
			Message:    r.GetMessage(),
			Partitions: r.GetPartitions(),
			TopicID:    topicID,
			TenantID:   tenant,
			TopicName:  r.GetTopicName(),
		})
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("record topic status of node %q: begin: %w", nodeID, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	q := s.queries.WithTx(tx)
	stored := 0
	for _, p := range params {
		n, err := q.UpsertTopicBrokerStatus(ctx, p)
		if err != nil {
			return 0, fmt.Errorf("record topic status of node %q for topic %q: %w", nodeID, p.TopicName, err)
		}
		stored += int(n)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("record topic status of node %q: commit: %w", nodeID, err)
	}
	return stored, nil
}

// ForgetNodeTopicStatus removes every report of node nodeID, for a node that left the cluster: its
// observations no longer describe anything that serves. It returns how many reports were removed.
func (s *Store) ForgetNodeTopicStatus(ctx context.Context, nodeID string) (int64, error) {
	n, err := s.queries.DeleteTopicBrokerStatusOfNode(ctx, nodeID)
	if err != nil {
		return 0, fmt.Errorf("forget topic status of node %q: %w", nodeID, err)
	}
	return n, nil
}

// brokerStateRank orders states from best to worst, so a topic shows its worst node's state.
var brokerStateRank = map[pdsv1.BrokerState]int{
	pdsv1.BrokerState_BROKER_STATE_READY:   1,
	pdsv1.BrokerState_BROKER_STATE_PENDING: 2,
	pdsv1.BrokerState_BROKER_STATE_FAILED:  3,
}

// brokerStatus summarises the nodes' reports for topic: the worst state across them (FAILED > PENDING >
// READY) with that report's message, node and time; among equally bad reports the newest wins. A READY
// report with fewer partitions than the topic now has counts as PENDING: that node has not yet carried
// out the partition increase. No reports at all is PENDING.
func brokerStatus(topic *pdsv1.Topic, rows []sqlcdb.TopicBrokerStatus) (*pdsv1.TopicBrokerStatus, error) {
	var worst *pdsv1.TopicBrokerStatus
	var worstAt pgtype.Timestamptz
	for _, row := range rows {
		v, ok := pdsv1.BrokerState_value[row.State]
		if !ok {
			return nil, fmt.Errorf("topic %q: unknown broker state %q in database", topic.GetTopicName(), row.State)
		}
		status := &pdsv1.TopicBrokerStatus{
			State:      pdsv1.BrokerState(v),
			Message:    row.Message,
			Partitions: row.Partitions,
			NodeId:     row.NodeID,
			UpdatedAt:  formatCreatedAt(row.UpdatedAt),
		}
		if status.State == pdsv1.BrokerState_BROKER_STATE_READY && status.Partitions < topic.GetPartitions() {
			status.State = pdsv1.BrokerState_BROKER_STATE_PENDING
			status.Message = fmt.Sprintf("node %s last reported %d partitions; waiting for it to apply %d",
				row.NodeID, row.Partitions, topic.GetPartitions())
		}
		rank, worstRank := brokerStateRank[status.State], brokerStateRank[worst.GetState()]
		if worst == nil || rank > worstRank || (rank == worstRank && row.UpdatedAt.Time.After(worstAt.Time)) {
			worst, worstAt = status, row.UpdatedAt
		}
	}
	if worst == nil {
		return &pdsv1.TopicBrokerStatus{
			State:   pdsv1.BrokerState_BROKER_STATE_PENDING,
			Message: "no data-plane node has reported this topic yet",
		}, nil
	}
	return worst, nil
}
