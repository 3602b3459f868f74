package admin

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

// SubscriptionService implements pds.v1.SubscriptionService.
type SubscriptionService struct {
	deps Deps
}

var _ pdsv1connect.SubscriptionServiceHandler = (*SubscriptionService)(nil)

// NewSubscriptionService returns the subscription admin service. It panics when a dependency is missing.
func NewSubscriptionService(deps Deps) *SubscriptionService {
	deps.check()
	return &SubscriptionService{deps: deps}
}

// CreateSubscription creates a subscription on an existing topic.
func (s *SubscriptionService) CreateSubscription(ctx context.Context, req *connect.Request[pdsv1.CreateSubscriptionRequest]) (*connect.Response[pdsv1.CreateSubscriptionResponse], error) {
	in := req.Msg.GetSubscription()
	var errs apierr.FieldErrors
	errs = checkSubscriptionID(errs, "subscription.subscription_id", in.GetSubscriptionId())
	errs = checkTopicName(errs, "subscription.topic_name", in.GetTopicName())
	errs = checkWorkflow(errs, "subscription.subscriber_workflow", in.GetSubscriberWorkflow())
	status, errs := normalizeStatus(errs, "subscription.status", in.GetStatus())
	errs = checkFilters(errs, "subscription", in.GetFilters())
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	sub, outboxID, err := s.deps.Store.CreateSubscription(ctx, tenantOf(ctx), &pdsv1.Subscription{
		SubscriptionId:     in.GetSubscriptionId(),
		TopicName:          in.GetTopicName(),
		SubscriberWorkflow: in.GetSubscriberWorkflow(),
		Filters:            in.GetFilters(),
		Status:             status,
	})
	if err != nil {
		if errors.Is(err, store.ErrTopicMissing) {
			return nil, connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("subscription.topic_name: topic %q does not exist; create it first", in.GetTopicName()))
		}
		return nil, s.subscriptionError(ctx, "create subscription", in.GetSubscriptionId(), err)
	}
	version, err := s.deps.waitApplied(ctx, "create subscription", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.CreateSubscriptionResponse{Subscription: sub, ConfigVersion: version}), nil
}

// GetSubscription returns one subscription.
func (s *SubscriptionService) GetSubscription(ctx context.Context, req *connect.Request[pdsv1.GetSubscriptionRequest]) (*connect.Response[pdsv1.GetSubscriptionResponse], error) {
	id := req.Msg.GetSubscriptionId()
	if errs := checkSubscriptionID(nil, "subscription_id", id); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	sub, err := s.deps.Store.GetSubscription(ctx, tenantOf(ctx), id)
	if err != nil {
		return nil, s.subscriptionError(ctx, "get subscription", id, err)
	}
	return connect.NewResponse(&pdsv1.GetSubscriptionResponse{Subscription: sub}), nil
}

// ListSubscriptions returns the tenant's subscriptions ordered by subscription_id, optionally one topic's.
func (s *SubscriptionService) ListSubscriptions(ctx context.Context, req *connect.Request[pdsv1.ListSubscriptionsRequest]) (*connect.Response[pdsv1.ListSubscriptionsResponse], error) {
	topic := req.Msg.GetTopicName()
	if topic != "" {
		if errs := checkTopicName(nil, "topic_name", topic); len(errs) > 0 {
			return nil, apierr.InvalidArgument(errs...)
		}
	}
	subs, err := s.deps.Store.ListSubscriptions(ctx, tenantOf(ctx), topic)
	if err != nil {
		return nil, s.deps.internal(ctx, "list subscriptions", err)
	}
	return connect.NewResponse(&pdsv1.ListSubscriptionsResponse{Subscriptions: subs}), nil
}

// UpdateSubscription replaces subscriber_workflow and filters; topic_name and status are not changed by it.
func (s *SubscriptionService) UpdateSubscription(ctx context.Context, req *connect.Request[pdsv1.UpdateSubscriptionRequest]) (*connect.Response[pdsv1.UpdateSubscriptionResponse], error) {
	in := req.Msg.GetSubscription()
	var errs apierr.FieldErrors
	errs = checkSubscriptionID(errs, "subscription.subscription_id", in.GetSubscriptionId())
	errs = checkWorkflow(errs, "subscription.subscriber_workflow", in.GetSubscriberWorkflow())
	errs = checkFilters(errs, "subscription", in.GetFilters())
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	sub, outboxID, err := s.deps.Store.UpdateSubscription(ctx, tenantOf(ctx), &pdsv1.Subscription{
		SubscriptionId:     in.GetSubscriptionId(),
		SubscriberWorkflow: in.GetSubscriberWorkflow(),
		Filters:            in.GetFilters(),
	})
	if err != nil {
		return nil, s.subscriptionError(ctx, "update subscription", in.GetSubscriptionId(), err)
	}
	version, err := s.deps.waitApplied(ctx, "update subscription", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.UpdateSubscriptionResponse{Subscription: sub, ConfigVersion: version}), nil
}

// SetSubscriptionEnabled sets status "active" (enabled) or "paused" (not enabled).
func (s *SubscriptionService) SetSubscriptionEnabled(ctx context.Context, req *connect.Request[pdsv1.SetSubscriptionEnabledRequest]) (*connect.Response[pdsv1.SetSubscriptionEnabledResponse], error) {
	id := req.Msg.GetSubscriptionId()
	if errs := checkSubscriptionID(nil, "subscription_id", id); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	status := store.StatusPaused
	if req.Msg.GetEnabled() {
		status = store.StatusActive
	}
	sub, outboxID, err := s.deps.Store.SetSubscriptionStatus(ctx, tenantOf(ctx), id, status)
	if err != nil {
		return nil, s.subscriptionError(ctx, "set subscription enabled", id, err)
	}
	version, err := s.deps.waitApplied(ctx, "set subscription enabled", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.SetSubscriptionEnabledResponse{Subscription: sub, ConfigVersion: version}), nil
}

// DeleteSubscription deletes a subscription.
func (s *SubscriptionService) DeleteSubscription(ctx context.Context, req *connect.Request[pdsv1.DeleteSubscriptionRequest]) (*connect.Response[pdsv1.DeleteSubscriptionResponse], error) {
	id := req.Msg.GetSubscriptionId()
	if errs := checkSubscriptionID(nil, "subscription_id", id); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	outboxID, err := s.deps.Store.DeleteSubscription(ctx, tenantOf(ctx), id)
	if err != nil {
		return nil, s.subscriptionError(ctx, "delete subscription", id, err)
	}
	version, err := s.deps.waitApplied(ctx, "delete subscription", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.DeleteSubscriptionResponse{ConfigVersion: version}), nil
}

func (s *SubscriptionService) subscriptionError(ctx context.Context, op, id string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("subscription %q not found", id))
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("subscription %q already exists", id))
	}
	return s.deps.internal(ctx, op, err)
}
