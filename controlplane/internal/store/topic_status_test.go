package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

func statusReport(topic *pdsv1.Topic, state pdsv1.BrokerState, message string, partitions int32) *pdsv1.TopicStatusReport {
	return &pdsv1.TopicStatusReport{
		TenantId: topic.GetTenantId(), TopicName: topic.GetTopicName(), TopicId: topic.GetId(),
		State: state, Message: message, Partitions: partitions,
	}
}

func record(t *testing.T, s *store.Store, nodeID string, reports ...*pdsv1.TopicStatusReport) int {
	t.Helper()
	stored, err := s.RecordTopicStatus(context.Background(), nodeID, reports)
	if err != nil {
		t.Fatalf("record topic status of %s: %v", nodeID, err)
	}
	return stored
}

func TestTopicShowsTheWorstBrokerStatusAcrossNodes(t *testing.T) {
	t.Parallel()
	const (
		ready   = pdsv1.BrokerState_BROKER_STATE_READY
		pending = pdsv1.BrokerState_BROKER_STATE_PENDING
		failed  = pdsv1.BrokerState_BROKER_STATE_FAILED
	)
	type nodeReport struct {
		node       string
		state      pdsv1.BrokerState
		message    string
		partitions int32
	}
	cases := []struct {
		name        string
		reports     []nodeReport
		wantState   pdsv1.BrokerState
		wantNode    string
		wantMessage string
	}{
		{"nobody reported yet", nil, pending, "", "no data-plane node has reported this topic yet"},
		{"all nodes ready", []nodeReport{{"dp-1", ready, "", 4}, {"dp-2", ready, "", 4}}, ready, "dp-2", ""},
		{"one node failed", []nodeReport{{"dp-1", failed, "create topic: connection refused", 0}, {"dp-2", ready, "", 4}},
			failed, "dp-1", "create topic: connection refused"},
		{"failed beats pending", []nodeReport{{"dp-1", pending, "", 0}, {"dp-2", failed, "quota exceeded", 0}, {"dp-3", ready, "", 4}},
			failed, "dp-2", "quota exceeded"},
		{"a node behind on partitions is pending", []nodeReport{{"dp-1", ready, "", 4}, {"dp-2", ready, "", 2}},
			pending, "dp-2", "node dp-2 last reported 2 partitions; waiting for it to apply 4"},
		{"a later report replaces the node's earlier one", []nodeReport{{"dp-1", failed, "timeout", 0}, {"dp-1", ready, "", 4}},
			ready, "dp-1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := openStore(t)
			topic := mustCreateTopic(t, s, "portfolio/state/updated")
			for _, r := range tc.reports {
				record(t, s, r.node, statusReport(topic, r.state, r.message, r.partitions))
			}
			got, err := s.GetTopic(context.Background(), tenant, topic.GetTopicName())
			if err != nil {
				t.Fatalf("get topic: %v", err)
			}
			listed, err := s.ListTopics(context.Background(), tenant)
			if err != nil {
				t.Fatalf("list topics: %v", err)
			}
			for source, status := range map[string]*pdsv1.TopicBrokerStatus{"GetTopic": got.GetBrokerStatus(), "ListTopics": listed[0].GetBrokerStatus()} {
				if status.GetState() != tc.wantState || status.GetNodeId() != tc.wantNode || status.GetMessage() != tc.wantMessage {
					t.Errorf("%s broker_status = %v, want state %s, node %q, message %q", source, status, tc.wantState, tc.wantNode, tc.wantMessage)
				}
				if tc.wantNode != "" && !createdAtPattern.MatchString(status.GetUpdatedAt()) {
					t.Errorf("%s broker_status.updated_at = %q, want RFC 3339 with milliseconds", source, status.GetUpdatedAt())
				}
			}
		})
	}
}

func TestPartitionIncreaseMakesAReadyTopicPendingUntilReported(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	topic := mustCreateTopic(t, s, "portfolio/state/updated")
	record(t, s, "dp-1", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	grown := stateTopic(topic.GetTopicName())
	grown.Partitions = 8
	if _, _, err := s.UpdateTopic(context.Background(), tenant, grown); err != nil {
		t.Fatalf("grow partitions: %v", err)
	}
	if got, _ := s.GetTopic(context.Background(), tenant, topic.GetTopicName()); got.GetBrokerStatus().GetState() != pdsv1.BrokerState_BROKER_STATE_PENDING {
		t.Fatalf("broker status right after growing to 8 partitions = %v, want PENDING", got.GetBrokerStatus())
	}
	record(t, s, "dp-1", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 8))
	if got, _ := s.GetTopic(context.Background(), tenant, topic.GetTopicName()); got.GetBrokerStatus().GetState() != pdsv1.BrokerState_BROKER_STATE_READY ||
		got.GetBrokerStatus().GetPartitions() != 8 {
		t.Fatalf("broker status after dp-1 reported 8 partitions = %v, want READY with 8", got.GetBrokerStatus())
	}
}

func TestReportForADeletedOrRecreatedTopicIsNotStored(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	old := mustCreateTopic(t, s, "portfolio/state/updated")
	if _, err := s.DeleteTopic(context.Background(), tenant, old.GetTopicName()); err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	if stored := record(t, s, "dp-1", statusReport(old, pdsv1.BrokerState_BROKER_STATE_READY, "", 4)); stored != 0 {
		t.Fatalf("stored %d reports for a deleted topic, want 0", stored)
	}
	recreated := mustCreateTopic(t, s, old.GetTopicName())
	if stored := record(t, s, "dp-1", statusReport(old, pdsv1.BrokerState_BROKER_STATE_READY, "", 4)); stored != 0 {
		t.Fatalf("stored %d reports naming the old id of a recreated topic, want 0", stored)
	}
	if stored := record(t, s, "dp-1", statusReport(recreated, pdsv1.BrokerState_BROKER_STATE_READY, "", 4)); stored != 1 {
		t.Fatalf("stored %d reports for the recreated topic's own id, want 1", stored)
	}
}

func TestDeletingATopicDeletesItsBrokerStatus(t *testing.T) {
	t.Parallel()
	s, databaseURL := openStore(t)
	topic := mustCreateTopic(t, s, "portfolio/state/updated")
	record(t, s, "dp-1", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	record(t, s, "dp-2", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_FAILED, "boom", 0))
	if _, err := s.DeleteTopic(context.Background(), tenant, topic.GetTopicName()); err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	var left int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM topic_broker_status WHERE topic_id = $1", topic.GetId()).Scan(&left); err != nil {
		t.Fatalf("count status rows: %v", err)
	}
	if left != 0 {
		t.Fatalf("%d broker status rows of the deleted topic remain, want 0", left)
	}
}

func TestForgetNodeTopicStatusRemovesOnlyThatNode(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t)
	topic := mustCreateTopic(t, s, "portfolio/state/updated")
	record(t, s, "dp-1", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	record(t, s, "dp-2", statusReport(topic, pdsv1.BrokerState_BROKER_STATE_FAILED, "boom", 0))
	removed, err := s.ForgetNodeTopicStatus(context.Background(), "dp-2")
	if err != nil || removed != 1 {
		t.Fatalf("forget dp-2: removed %d, %v; want 1, nil", removed, err)
	}
	if got, _ := s.GetTopic(context.Background(), tenant, topic.GetTopicName()); got.GetBrokerStatus().GetNodeId() != "dp-1" ||
		got.GetBrokerStatus().GetState() != pdsv1.BrokerState_BROKER_STATE_READY {
		t.Fatalf("broker status after forgetting dp-2 = %v, want dp-1's READY", got.GetBrokerStatus())
	}
}
