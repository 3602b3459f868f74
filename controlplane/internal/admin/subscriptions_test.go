package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
)

func newHarnessWithTopic(t *testing.T, topic string) *harness {
	t.Helper()
	h := newHarness(t)
	if _, err := h.topics.CreateTopic(context.Background(), connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: topic, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
	}})); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	return h
}

func TestCreateSubscriptionValidation(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")

	valid := func(id string) *pdsv1.Subscription {
		return &pdsv1.Subscription{SubscriptionId: id, TopicName: "t", SubscriberWorkflow: "rebalancer"}
	}
	with := func(id string, change func(*pdsv1.Subscription)) *pdsv1.Subscription {
		s := valid(id)
		change(s)
		return s
	}
	tests := []struct {
		name       string
		sub        *pdsv1.Subscription
		wantField  string // "" when the subscription must be created
		wantText   string
		wantStatus string
	}{
		{"id at 100 characters", valid(nameOfLength("id100-", 100)), "", "", "active"},
		{"id at 101 characters", valid(nameOfLength("id101-", 101)), "subscription.subscription_id", "at most 100", ""},
		{"id missing", valid(""), "subscription.subscription_id", "required", ""},
		{"id with a slash", valid("a/b"), "subscription.subscription_id", "may contain only", ""},
		{"id with every allowed character", valid("Aa0._-"), "", "", "active"},
		{"workflow at 100 characters", with("wf100", func(s *pdsv1.Subscription) { s.SubscriberWorkflow = strings.Repeat("w", 100) }), "", "", "active"},
		{"workflow at 101 characters", with("wf101", func(s *pdsv1.Subscription) { s.SubscriberWorkflow = strings.Repeat("w", 101) }),
			"subscription.subscriber_workflow", "at most 100", ""},
		{"workflow missing", with("wf0", func(s *pdsv1.Subscription) { s.SubscriberWorkflow = "" }), "subscription.subscriber_workflow", "required", ""},
		{"workflow with a newline", with("wfnl", func(s *pdsv1.Subscription) { s.SubscriberWorkflow = "a\nb" }),
			"subscription.subscriber_workflow", "control characters", ""},
		{"topic name at 201 characters", with("t201", func(s *pdsv1.Subscription) { s.TopicName = nameOfLength("t", 201) }),
			"subscription.topic_name", "at most 200", ""},
		{"topic name missing", with("t0", func(s *pdsv1.Subscription) { s.TopicName = "" }), "subscription.topic_name", "required", ""},
		{"status paused", with("paused", func(s *pdsv1.Subscription) { s.Status = "paused" }), "", "", "paused"},
		{"status active", with("active", func(s *pdsv1.Subscription) { s.Status = "active" }), "", "", "active"},
		{"status unknown", with("deleted", func(s *pdsv1.Subscription) { s.Status = "deleted" }), "subscription.status", `"active" or "paused"`, ""},
		{"filters that compile", with("filtered", func(s *pdsv1.Subscription) {
			s.Filters = &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{"P-*.state.update"}, Cel: "event.data.total_value > 1.0"}
		}), "", "", "active"},
		{"cel that does not compile", with("badcel", func(s *pdsv1.Subscription) {
			s.Filters = &pdsv1.SubscriptionFilters{Cel: "event.data.total_value >"}
		}), "subscription.filters.cel", "", ""},
		{"min priority above 9", with("badprio", func(s *pdsv1.Subscription) {
			s.Filters = &pdsv1.SubscriptionFilters{MinPriority: 10}
		}), "subscription.filters.min_priority", "9", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := h.subs.CreateSubscription(context.Background(), connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: tt.sub}))
			if tt.wantField != "" {
				checkInvalidArgument(t, err, tt.wantField, tt.wantText)
				return
			}
			if err != nil {
				t.Fatalf("CreateSubscription: %v", err)
			}
			if got := resp.Msg.GetSubscription().GetStatus(); got != tt.wantStatus {
				t.Errorf("status = %q, want %q", got, tt.wantStatus)
			}
		})
	}
}

func TestCreateSubscriptionOnMissingTopicIsFailedPrecondition(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, err := h.subs.CreateSubscription(context.Background(), connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "s", TopicName: "portfolio/none", SubscriberWorkflow: "w",
	}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("error = %v, want FailedPrecondition", err)
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) && (!strings.Contains(cerr.Message(), "topic_name") || !strings.Contains(cerr.Message(), "portfolio/none")) {
		t.Errorf("message %q should name the field topic_name and the topic", cerr.Message())
	}
}

func TestSubscriptionIsReplicatedWithCompiledFilters(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")
	ctx := context.Background()
	filters := &pdsv1.SubscriptionFilters{PortfolioIds: []string{"P-1"}}
	resp, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "s", TopicName: "t", SubscriberWorkflow: "w", Filters: filters,
	}}))
	if err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	cfg, err := h.fsm.WaitForVersion(ctx, resp.Msg.GetConfigVersion())
	if err != nil {
		t.Fatalf("wait for config version: %v", err)
	}
	sub, ok := cfg.Subscription(tenancy.DefaultTenantID, "s")
	if !ok {
		t.Fatalf("config version %d does not hold subscription s", resp.Msg.GetConfigVersion())
	}
	if !proto.Equal(sub.Proto, resp.Msg.GetSubscription()) || sub.Matcher == nil || sub.CompileErr != nil {
		t.Errorf("replicated subscription %v (compile error %v), want %v with compiled filters", sub.Proto, sub.CompileErr, resp.Msg.GetSubscription())
	}
	match := &pdsv1.PortfolioDistribution{Data: &pdsv1.PortfolioData{PortfolioId: "P-1"}}
	other := &pdsv1.PortfolioDistribution{Data: &pdsv1.PortfolioData{PortfolioId: "P-2"}}
	if !sub.Matcher.Match(match) || sub.Matcher.Match(other) {
		t.Errorf("replicated filter portfolio_ids [P-1]: match P-1 = %v, match P-2 = %v", sub.Matcher.Match(match), sub.Matcher.Match(other))
	}
}

func TestSetSubscriptionEnabledMapsToStatus(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")
	ctx := context.Background()
	if _, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "s", TopicName: "t", SubscriberWorkflow: "w",
	}})); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	tests := []struct {
		name    string
		enabled bool
		want    string
	}{
		{"disable pauses", false, "paused"},
		{"enable activates", true, "active"},
	}
	for _, tt := range tests { // in order: each case changes the same subscription
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.subs.SetSubscriptionEnabled(ctx, connect.NewRequest(&pdsv1.SetSubscriptionEnabledRequest{SubscriptionId: "s", Enabled: tt.enabled}))
			if err != nil {
				t.Fatalf("SetSubscriptionEnabled: %v", err)
			}
			if got := resp.Msg.GetSubscription().GetStatus(); got != tt.want {
				t.Errorf("status = %q, want %q", got, tt.want)
			}
			cfg, err := h.fsm.WaitForVersion(ctx, resp.Msg.GetConfigVersion())
			if err != nil {
				t.Fatalf("wait for config version: %v", err)
			}
			if sub, _ := cfg.Subscription(tenancy.DefaultTenantID, "s"); sub == nil || sub.Proto.GetStatus() != tt.want {
				t.Errorf("replicated status = %v, want %q", sub, tt.want)
			}
		})
	}
}

func TestUpdateSubscription(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")
	ctx := context.Background()
	if _, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "s", TopicName: "t", SubscriberWorkflow: "w",
	}})); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	tests := []struct {
		name      string
		sub       *pdsv1.Subscription
		wantCode  connect.Code // 0: success
		wantField string
	}{
		{"new workflow and filters", &pdsv1.Subscription{SubscriptionId: "s", SubscriberWorkflow: "risk",
			Filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE}}}, 0, ""},
		{"workflow at 101 characters", &pdsv1.Subscription{SubscriptionId: "s", SubscriberWorkflow: strings.Repeat("w", 101)},
			connect.CodeInvalidArgument, "subscription.subscriber_workflow"},
		{"filters that do not compile", &pdsv1.Subscription{SubscriptionId: "s", SubscriberWorkflow: "w",
			Filters: &pdsv1.SubscriptionFilters{Cel: "("}}, connect.CodeInvalidArgument, "subscription.filters.cel"},
		{"missing subscription", &pdsv1.Subscription{SubscriptionId: "none", SubscriberWorkflow: "w"}, connect.CodeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.subs.UpdateSubscription(ctx, connect.NewRequest(&pdsv1.UpdateSubscriptionRequest{Subscription: tt.sub}))
			switch {
			case tt.wantCode == connect.CodeInvalidArgument:
				checkInvalidArgument(t, err, tt.wantField, "")
			case tt.wantCode != 0:
				if connect.CodeOf(err) != tt.wantCode {
					t.Errorf("error = %v, want code %s", err, tt.wantCode)
				}
			case err != nil:
				t.Fatalf("UpdateSubscription: %v", err)
			default:
				got := resp.Msg.GetSubscription()
				if got.GetSubscriberWorkflow() != tt.sub.GetSubscriberWorkflow() || !proto.Equal(got.GetFilters(), tt.sub.GetFilters()) || got.GetTopicName() != "t" {
					t.Errorf("updated subscription %v, want workflow %q, filters %v, topic t", got, tt.sub.GetSubscriberWorkflow(), tt.sub.GetFilters())
				}
			}
		})
	}
}

func TestSubscriptionErrorCodes(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")
	ctx := context.Background()
	if _, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "taken", TopicName: "t", SubscriberWorkflow: "w",
	}})); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	tests := []struct {
		name     string
		call     func() error
		wantCode connect.Code
		wantText string
	}{
		{"create a taken id", func() error {
			_, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
				SubscriptionId: "taken", TopicName: "t", SubscriberWorkflow: "w",
			}}))
			return err
		}, connect.CodeAlreadyExists, `"taken" already exists`},
		{"get a missing subscription", func() error {
			_, err := h.subs.GetSubscription(ctx, connect.NewRequest(&pdsv1.GetSubscriptionRequest{SubscriptionId: "none"}))
			return err
		}, connect.CodeNotFound, `"none" not found`},
		{"pause a missing subscription", func() error {
			_, err := h.subs.SetSubscriptionEnabled(ctx, connect.NewRequest(&pdsv1.SetSubscriptionEnabledRequest{SubscriptionId: "none"}))
			return err
		}, connect.CodeNotFound, `"none" not found`},
		{"delete a missing subscription", func() error {
			_, err := h.subs.DeleteSubscription(ctx, connect.NewRequest(&pdsv1.DeleteSubscriptionRequest{SubscriptionId: "none"}))
			return err
		}, connect.CodeNotFound, `"none" not found`},
		{"list with an invalid topic name", func() error {
			_, err := h.subs.ListSubscriptions(ctx, connect.NewRequest(&pdsv1.ListSubscriptionsRequest{TopicName: "a b"}))
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

func TestDeleteSubscriptionFreesTopic(t *testing.T) {
	t.Parallel()
	h := newHarnessWithTopic(t, "t")
	ctx := context.Background()
	if _, err := h.subs.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: &pdsv1.Subscription{
		SubscriptionId: "s", TopicName: "t", SubscriberWorkflow: "w",
	}})); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	del, err := h.subs.DeleteSubscription(ctx, connect.NewRequest(&pdsv1.DeleteSubscriptionRequest{SubscriptionId: "s"}))
	if err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	cfg, err := h.fsm.WaitForVersion(ctx, del.Msg.GetConfigVersion())
	if err != nil {
		t.Fatalf("wait for config version: %v", err)
	}
	if _, ok := cfg.Subscription(tenancy.DefaultTenantID, "s"); ok {
		t.Errorf("config version %d still holds deleted subscription s", del.Msg.GetConfigVersion())
	}
	list, err := h.subs.ListSubscriptions(ctx, connect.NewRequest(&pdsv1.ListSubscriptionsRequest{TopicName: "t"}))
	if err != nil {
		t.Fatalf("ListSubscriptions: %v", err)
	}
	if n := len(list.Msg.GetSubscriptions()); n != 0 {
		t.Errorf("topic t still lists %d subscriptions", n)
	}
	if _, err := h.topics.DeleteTopic(ctx, connect.NewRequest(&pdsv1.DeleteTopicRequest{TopicName: "t"})); err != nil {
		t.Errorf("DeleteTopic after its only subscription was deleted: %v", err)
	}
}
