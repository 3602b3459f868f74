package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
)

// nameOfLength returns a valid topic or subscription name of exactly n characters, unique per prefix.
func nameOfLength(prefix string, n int) string {
	if n <= len(prefix) {
		return prefix[:n]
	}
	return prefix + strings.Repeat("x", n-len(prefix))
}

// checkInvalidArgument fails unless err is InvalidArgument with a violation of field whose description
// mentions want.
func checkInvalidArgument(t *testing.T, err error, field, want string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument on %s", err, field)
	}
	for _, v := range apierr.Violations(err) {
		if v.GetField() == field {
			if !strings.Contains(v.GetDescription(), want) {
				t.Errorf("violation of %s says %q, want it to mention %q", field, v.GetDescription(), want)
			}
			return
		}
	}
	t.Errorf("InvalidArgument %v has no field violation for %s", err, field)
}

func TestCreateTopicValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	state := pdsv1.PortfolioDataType_PORTFOLIO_STATE

	tests := []struct {
		name      string
		topic     *pdsv1.Topic
		wantField string // "" when the topic must be created
		wantText  string
		wantParts int32
	}{
		{"name at 200 characters", &pdsv1.Topic{TopicName: nameOfLength("n200-", 200), DataType: state}, "", "", 1},
		{"name at 201 characters", &pdsv1.Topic{TopicName: nameOfLength("n201-", 201), DataType: state}, "topic.topic_name", "at most 200", 0},
		{"name missing", &pdsv1.Topic{DataType: state}, "topic.topic_name", "required", 0},
		{"name with a space", &pdsv1.Topic{TopicName: "portfolio state", DataType: state}, "topic.topic_name", "may contain only", 0},
		{"name with every allowed character", &pdsv1.Topic{TopicName: "Aa0/._-", DataType: state}, "", "", 1},
		{"data type missing", &pdsv1.Topic{TopicName: "no-type"}, "topic.data_type", "required", 0},
		{"data type unknown", &pdsv1.Topic{TopicName: "bad-type", DataType: 99}, "topic.data_type", "PORTFOLIO_STATE", 0},
		{"partitions 0 means 1", &pdsv1.Topic{TopicName: "p0", DataType: state}, "", "", 1},
		{"partitions at 128", &pdsv1.Topic{TopicName: "p128", DataType: state, Partitions: 128}, "", "", 128},
		{"partitions at 129", &pdsv1.Topic{TopicName: "p129", DataType: state, Partitions: 129}, "topic.partitions", "1 to 128", 0},
		{"partitions negative", &pdsv1.Topic{TopicName: "pneg", DataType: state, Partitions: -1}, "topic.partitions", "1 to 128", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := h.topics.CreateTopic(context.Background(), connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: tt.topic}))
			if tt.wantField != "" {
				checkInvalidArgument(t, err, tt.wantField, tt.wantText)
				return
			}
			if err != nil {
				t.Fatalf("CreateTopic: %v", err)
			}
			if got := resp.Msg.GetTopic().GetPartitions(); got != tt.wantParts {
				t.Errorf("partitions = %d, want %d", got, tt.wantParts)
			}
		})
	}
}

func TestCreatedTopicIsEnabledAndReplicated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()

	resp, err := h.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: "portfolio/state/updated", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 4,
	}}))
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	topic := resp.Msg.GetTopic()
	if !topic.GetEnabled() || topic.GetTenantId() != tenancy.DefaultTenantID || topic.GetId() == "" || topic.GetCreatedAt() == "" {
		t.Errorf("created topic %v: want enabled, default tenant, id and created_at assigned", topic)
	}
	cfg, err := h.fsm.WaitForVersion(ctx, resp.Msg.GetConfigVersion())
	if err != nil {
		t.Fatalf("wait for config version %d: %v", resp.Msg.GetConfigVersion(), err)
	}
	if state := topic.GetBrokerStatus().GetState(); state != pdsv1.BrokerState_BROKER_STATE_PENDING {
		t.Errorf("created topic broker_status.state = %s, want PENDING until a data-plane node reports it", state)
	}
	// The broker status is an observation of the control plane, never part of the replicated config.
	configured := proto.CloneOf(topic)
	configured.BrokerStatus = nil
	replicated, ok := cfg.Topic(tenancy.DefaultTenantID, "portfolio/state/updated")
	if !ok || !proto.Equal(replicated, configured) {
		t.Errorf("config version %d holds topic %v, want %v", resp.Msg.GetConfigVersion(), replicated, configured)
	}

	next, err := h.topics.SetTopicEnabled(ctx, connect.NewRequest(&pdsv1.SetTopicEnabledRequest{TopicName: "portfolio/state/updated"}))
	if err != nil {
		t.Fatalf("SetTopicEnabled: %v", err)
	}
	if next.Msg.GetConfigVersion() <= resp.Msg.GetConfigVersion() {
		t.Errorf("config version after a second write = %d, want above %d", next.Msg.GetConfigVersion(), resp.Msg.GetConfigVersion())
	}
	if next.Msg.GetTopic().GetEnabled() {
		t.Errorf("topic still enabled after SetTopicEnabled(false)")
	}
}

func TestUpdateTopicPartitions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	state := pdsv1.PortfolioDataType_PORTFOLIO_STATE
	if _, err := h.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: "t", DataType: state, Partitions: 8,
	}})); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}

	tests := []struct {
		name       string
		partitions int32
		wantField  string
		wantText   string
		wantParts  int32
	}{
		{"fewer than now", 7, "topic.partitions", "at least 8", 0},
		{"above 128", 129, "topic.partitions", "1 to 128", 0},
		{"0 keeps the current count", 0, "", "", 8},
		{"same count", 8, "", "", 8},
		{"grow to 128", 128, "", "", 128},
	}
	for _, tt := range tests { // in order: each case starts from the previous one's topic
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.topics.UpdateTopic(ctx, connect.NewRequest(&pdsv1.UpdateTopicRequest{Topic: &pdsv1.Topic{
				TopicName: "t", DataType: state, Partitions: tt.partitions,
			}}))
			if tt.wantField != "" {
				checkInvalidArgument(t, err, tt.wantField, tt.wantText)
				return
			}
			if err != nil {
				t.Fatalf("UpdateTopic: %v", err)
			}
			if got := resp.Msg.GetTopic().GetPartitions(); got != tt.wantParts {
				t.Errorf("partitions = %d, want %d", got, tt.wantParts)
			}
		})
	}
}

func TestTopicErrorCodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	state := pdsv1.PortfolioDataType_PORTFOLIO_STATE
	for _, name := range []string{"taken", "read"} {
		if _, err := h.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{TopicName: name, DataType: state}})); err != nil {
			t.Fatalf("CreateTopic: %v", err)
		}
	}
	if _, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "reader", TopicName: "read", SubscriberWorkflow: "w",
	}})); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}

	tests := []struct {
		name     string
		call     func() error
		wantCode connect.Code
		wantText string
	}{
		{"create a taken name", func() error {
			_, err := h.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{TopicName: "taken", DataType: state}}))
			return err
		}, connect.CodeAlreadyExists, `"taken" already exists`},
		{"get a missing topic", func() error {
			_, err := h.topics.GetTopic(ctx, connect.NewRequest(&pdsv1.GetTopicRequest{TopicName: "missing"}))
			return err
		}, connect.CodeNotFound, `"missing" not found`},
		{"update a missing topic", func() error {
			_, err := h.topics.UpdateTopic(ctx, connect.NewRequest(&pdsv1.UpdateTopicRequest{Topic: &pdsv1.Topic{TopicName: "missing", DataType: state}}))
			return err
		}, connect.CodeNotFound, `"missing" not found`},
		{"enable a missing topic", func() error {
			_, err := h.topics.SetTopicEnabled(ctx, connect.NewRequest(&pdsv1.SetTopicEnabledRequest{TopicName: "missing", Enabled: true}))
			return err
		}, connect.CodeNotFound, `"missing" not found`},
		{"delete a missing topic", func() error {
			_, err := h.topics.DeleteTopic(ctx, connect.NewRequest(&pdsv1.DeleteTopicRequest{TopicName: "missing"}))
			return err
		}, connect.CodeNotFound, `"missing" not found`},
		{"delete a topic with subscriptions", func() error {
			_, err := h.topics.DeleteTopic(ctx, connect.NewRequest(&pdsv1.DeleteTopicRequest{TopicName: "read"}))
			return err
		}, connect.CodeFailedPrecondition, "still has subscriptions"},
		{"get without a name", func() error {
			_, err := h.topics.GetTopic(ctx, connect.NewRequest(&pdsv1.GetTopicRequest{}))
			return err
		}, connect.CodeInvalidArgument, "topic_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if connect.CodeOf(err) != tt.wantCode {
				t.Fatalf("error = %v, want code %s", err, tt.wantCode)
			}
			var cerr *connect.Error
			if errors.As(err, &cerr) && !strings.Contains(cerr.Message(), tt.wantText) {
				t.Errorf("message %q does not mention %q", cerr.Message(), tt.wantText)
			}
		})
	}
}

func TestDeletedTopicLeavesListAndConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	for _, name := range []string{"b", "a"} {
		if _, err := h.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
			TopicName: name, DataType: pdsv1.PortfolioDataType_REBALANCING,
		}})); err != nil {
			t.Fatalf("CreateTopic: %v", err)
		}
	}
	del, err := h.topics.DeleteTopic(ctx, connect.NewRequest(&pdsv1.DeleteTopicRequest{TopicName: "b"}))
	if err != nil {
		t.Fatalf("DeleteTopic: %v", err)
	}
	list, err := h.topics.ListTopics(ctx, connect.NewRequest(&pdsv1.ListTopicsRequest{}))
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	if got := list.Msg.GetTopics(); len(got) != 1 || got[0].GetTopicName() != "a" {
		t.Errorf("topics after deleting b = %v, want only a", got)
	}
	cfg, err := h.fsm.WaitForVersion(ctx, del.Msg.GetConfigVersion())
	if err != nil {
		t.Fatalf("wait for config version: %v", err)
	}
	if _, ok := cfg.Topic(tenancy.DefaultTenantID, "b"); ok {
		t.Errorf("config version %d still holds deleted topic b", del.Msg.GetConfigVersion())
	}
}

// Admins use curl: the JSON surface must use the specification's snake_case names.
func TestJSONRequestsUseSnakeCaseNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := `{"topic": {"topic_name": "portfolio/cash/updated", "data_type": "CASH_MANAGEMENT", "partitions": 2}}`
	resp, err := http.Post(h.baseURL+"/pds.v1.TopicService/CreateTopic", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST CreateTopic: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST CreateTopic: status %s", resp.Status)
	}
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	topic, _ := got["topic"].(map[string]any)
	if _, ok := got["config_version"]; !ok || topic["topic_name"] != "portfolio/cash/updated" || topic["data_type"] != "CASH_MANAGEMENT" {
		t.Errorf("response %v: want snake_case keys config_version, topic.topic_name, topic.data_type", got)
	}
}
