package cluster_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

// createTopic stores a topic with 4 partitions in st, as the admin API would.
func createTopic(t *testing.T, st *store.Store, name string) *pdsv1.Topic {
	t.Helper()
	topic, _, err := st.CreateTopic(context.Background(), tenancy.DefaultTenantID, &pdsv1.Topic{
		TopicName: name, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 4, Enabled: true,
	})
	if err != nil {
		t.Fatalf("create topic %q: %v", name, err)
	}
	return topic
}

func report(topic *pdsv1.Topic, state pdsv1.BrokerState, message string, partitions int32) *pdsv1.TopicStatusReport {
	return &pdsv1.TopicStatusReport{
		TenantId: topic.GetTenantId(), TopicName: topic.GetTopicName(), TopicId: topic.GetId(),
		State: state, Message: message, Partitions: partitions,
	}
}

func sendReport(t *testing.T, client pdsv1connect.ClusterServiceClient, nodeID string, reports ...*pdsv1.TopicStatusReport) {
	t.Helper()
	_, err := client.ReportTopicStatus(context.Background(), connect.NewRequest(&pdsv1.ReportTopicStatusRequest{NodeId: nodeID, Topics: reports}))
	if err != nil {
		t.Fatalf("ReportTopicStatus from %s: %v", nodeID, err)
	}
}

func brokerStatusOf(t *testing.T, st *store.Store, name string) *pdsv1.TopicBrokerStatus {
	t.Helper()
	topic, err := st.GetTopic(context.Background(), tenancy.DefaultTenantID, name)
	if err != nil {
		t.Fatalf("get topic %q: %v", name, err)
	}
	return topic.GetBrokerStatus()
}

func TestReportedTopicStatusIsShownOnTheTopic(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	_, _, client := startLeaderWithStore(t, st)
	topic := createTopic(t, st, "portfolio/state/updated")

	sendReport(t, client, "dp-1", report(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	got := brokerStatusOf(t, st, topic.GetTopicName())
	if got.GetState() != pdsv1.BrokerState_BROKER_STATE_READY || got.GetPartitions() != 4 || got.GetNodeId() != "dp-1" || got.GetUpdatedAt() == "" {
		t.Fatalf("broker status after a READY report = %v, want READY, 4 partitions, node dp-1, with a time", got)
	}

	sendReport(t, client, "dp-2", report(topic, pdsv1.BrokerState_BROKER_STATE_FAILED, "broker refused: permission denied", 0))
	got = brokerStatusOf(t, st, topic.GetTopicName())
	if got.GetState() != pdsv1.BrokerState_BROKER_STATE_FAILED || got.GetNodeId() != "dp-2" || got.GetMessage() != "broker refused: permission denied" {
		t.Fatalf("broker status with one node FAILED = %v, want dp-2's FAILED with its message", got)
	}

	// The failing node leaves the cluster: its report stops counting.
	if _, err := client.LeaveNode(context.Background(), connect.NewRequest(&pdsv1.LeaveNodeRequest{NodeId: "dp-2"})); err != nil {
		t.Fatalf("LeaveNode dp-2: %v", err)
	}
	if got := brokerStatusOf(t, st, topic.GetTopicName()); got.GetState() != pdsv1.BrokerState_BROKER_STATE_READY || got.GetNodeId() != "dp-1" {
		t.Fatalf("broker status after the failing node left = %v, want dp-1's READY", got)
	}
}

func TestReportForARecreatedTopicIsIgnored(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	_, _, client := startLeaderWithStore(t, st)
	old := createTopic(t, st, "portfolio/state/updated")
	if _, err := st.DeleteTopic(context.Background(), tenancy.DefaultTenantID, old.GetTopicName()); err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	recreated := createTopic(t, st, old.GetTopicName())

	// A late report about the deleted incarnation must not describe the new one.
	sendReport(t, client, "dp-1", report(old, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	if got := brokerStatusOf(t, st, recreated.GetTopicName()); got.GetState() != pdsv1.BrokerState_BROKER_STATE_PENDING || got.GetNodeId() != "" {
		t.Fatalf("broker status of the recreated topic after a report for the old id = %v, want PENDING with no node", got)
	}
}

func TestReportTopicStatusValidatesInput(t *testing.T) {
	t.Parallel()
	_, _, client := startLeaderWithStore(t, openStore(t))
	valid := func() *pdsv1.TopicStatusReport {
		return &pdsv1.TopicStatusReport{
			TenantId: tenancy.DefaultTenantID, TopicName: "portfolio/state/updated", TopicId: "0193a0f4-8d7e-7c1a-9f3b-2d4e5f6a7b8c",
			State: pdsv1.BrokerState_BROKER_STATE_READY, Partitions: 4,
		}
	}
	cases := []struct {
		name   string
		nodeID string
		change func(r *pdsv1.TopicStatusReport)
		field  string
	}{
		{"missing node_id", "", func(*pdsv1.TopicStatusReport) {}, "node_id"},
		{"tenant_id not a UUID", "dp-1", func(r *pdsv1.TopicStatusReport) { r.TenantId = "default" }, "topics[0].tenant_id"},
		{"missing topic_name", "dp-1", func(r *pdsv1.TopicStatusReport) { r.TopicName = "" }, "topics[0].topic_name"},
		{"topic_name over 200 characters", "dp-1", func(r *pdsv1.TopicStatusReport) { r.TopicName = strings.Repeat("t", 201) }, "topics[0].topic_name"},
		{"topic_id not a UUID", "dp-1", func(r *pdsv1.TopicStatusReport) { r.TopicId = "x" }, "topics[0].topic_id"},
		{"state unspecified", "dp-1", func(r *pdsv1.TopicStatusReport) { r.State = pdsv1.BrokerState_BROKER_STATE_UNSPECIFIED }, "topics[0].state"},
		{"READY without partitions", "dp-1", func(r *pdsv1.TopicStatusReport) { r.Partitions = 0 }, "topics[0].partitions"},
		{"partitions over 128", "dp-1", func(r *pdsv1.TopicStatusReport) { r.Partitions = 129 }, "topics[0].partitions"},
		{"message over 2000 characters", "dp-1", func(r *pdsv1.TopicStatusReport) {
			r.State, r.Message = pdsv1.BrokerState_BROKER_STATE_FAILED, strings.Repeat("m", 2001)
		}, "topics[0].message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := valid()
			tc.change(r)
			_, err := client.ReportTopicStatus(context.Background(), connect.NewRequest(&pdsv1.ReportTopicStatusRequest{NodeId: tc.nodeID, Topics: []*pdsv1.TopicStatusReport{r}}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", connect.CodeOf(err), err)
			}
			violations := apierr.Violations(err)
			if len(violations) != 1 || violations[0].GetField() != tc.field {
				t.Fatalf("field violations %v, want exactly one naming %q", violations, tc.field)
			}
		})
	}
	t.Run("a report for an unknown topic id is accepted and ignored", func(t *testing.T) {
		t.Parallel()
		if _, err := client.ReportTopicStatus(context.Background(), connect.NewRequest(&pdsv1.ReportTopicStatusRequest{
			NodeId: "dp-1", Topics: []*pdsv1.TopicStatusReport{valid()},
		})); err != nil {
			t.Fatalf("ReportTopicStatus for a topic that does not exist: %v, want OK (it is ignored)", err)
		}
	})
}

func TestReportTopicStatusIsAnsweredWithoutALeader(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	fsm := configfsm.New(nil)
	lonely := openNode(t, "cp-2", t.TempDir(), fsm) // never bootstrapped: no leader anywhere
	client := serve(t, lonely, fsm, st)
	topic := createTopic(t, st, "portfolio/state/updated")
	sendReport(t, client, "dp-1", report(topic, pdsv1.BrokerState_BROKER_STATE_READY, "", 4))
	if got := brokerStatusOf(t, st, topic.GetTopicName()); got.GetState() != pdsv1.BrokerState_BROKER_STATE_READY {
		t.Fatalf("broker status after a report to a follower replica = %v, want READY", got)
	}
}
