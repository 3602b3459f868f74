package app_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestListTopicsShowsWhatDataPlaneNodesReported(t *testing.T) {
	t.Parallel()
	cp := start(t, pgtest.NewDatabase(t), t.TempDir())
	topics := topicClient(cp.url)
	ctx := context.Background()
	created, err := topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{
		Topic: &pdsv1.Topic{TopicName: "portfolio/state/updated", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 4},
	}))
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	topic := created.Msg.GetTopic()
	listStatus := func() *pdsv1.TopicBrokerStatus {
		t.Helper()
		resp, err := topics.ListTopics(ctx, connect.NewRequest(&pdsv1.ListTopicsRequest{}))
		if err != nil {
			t.Fatalf("ListTopics: %v", err)
		}
		if len(resp.Msg.GetTopics()) != 1 {
			t.Fatalf("ListTopics returned %d topics, want 1", len(resp.Msg.GetTopics()))
		}
		return resp.Msg.GetTopics()[0].GetBrokerStatus()
	}
	if got := listStatus(); got.GetState() != pdsv1.BrokerState_BROKER_STATE_PENDING {
		t.Fatalf("broker_status before any report = %v, want PENDING", got)
	}

	cluster := pdsv1connect.NewClusterServiceClient(http.DefaultClient, cp.url)
	reportFrom := func(nodeID string, state pdsv1.BrokerState, message string, partitions int32) {
		t.Helper()
		_, err := cluster.ReportTopicStatus(ctx, connect.NewRequest(&pdsv1.ReportTopicStatusRequest{
			NodeId: nodeID,
			Topics: []*pdsv1.TopicStatusReport{{
				TenantId: topic.GetTenantId(), TopicName: topic.GetTopicName(), TopicId: topic.GetId(),
				State: state, Message: message, Partitions: partitions,
			}},
		}))
		if err != nil {
			t.Fatalf("ReportTopicStatus from %s: %v", nodeID, err)
		}
	}
	reportFrom("dp-1", pdsv1.BrokerState_BROKER_STATE_READY, "", 4)
	if got := listStatus(); got.GetState() != pdsv1.BrokerState_BROKER_STATE_READY || got.GetPartitions() != 4 || got.GetNodeId() != "dp-1" {
		t.Fatalf("broker_status after dp-1 reported READY = %v, want READY with 4 partitions from dp-1", got)
	}
	reportFrom("dp-2", pdsv1.BrokerState_BROKER_STATE_FAILED, "create partitioned topic: 401 Unauthorized", 0)
	if got := listStatus(); got.GetState() != pdsv1.BrokerState_BROKER_STATE_FAILED || got.GetMessage() != "create partitioned topic: 401 Unauthorized" {
		t.Fatalf("broker_status after dp-2 reported FAILED = %v, want FAILED with dp-2's message", got)
	}
}
