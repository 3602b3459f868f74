package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

const (
	statusActive = "active"
	statusPaused = "paused"
)

// ManageSubscription forwards a subscription change to the control plane, then waits until this node's
// own configuration holds it, so a stream opened right after the answer sees the change. Control-plane
// errors pass through with their codes and details. SEEK is not a configuration change: this node moves
// the subscription at the broker itself.
func (s *Service) ManageSubscription(ctx context.Context, req *connect.Request[pdsv1.SubscriptionRequest]) (*connect.Response[pdsv1.SubscriptionResponse], error) {
	msg := req.Msg
	sub := msg.GetSubscription()
	var resp *pdsv1.SubscriptionResponse
	var err error
	switch msg.GetAction() {
	case pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_CREATE:
		if sub == nil {
			return nil, apierr.InvalidArgument(&apierr.FieldError{Field: "subscription", Description: "required for CREATE"})
		}
		resp, err = s.createSubscription(ctx, sub)
	case pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_UPDATE:
		if errs := validateSubscriptionID("subscription.subscription_id", sub.GetSubscriptionId()); len(errs) > 0 {
			return nil, apierr.InvalidArgument(errs...)
		}
		resp, err = s.updateSubscription(ctx, sub)
	case pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_DELETE:
		if errs := validateSubscriptionID("subscription.subscription_id", sub.GetSubscriptionId()); len(errs) > 0 {
			return nil, apierr.InvalidArgument(errs...)
		}
		resp, err = s.deleteSubscription(ctx, sub.GetSubscriptionId())
	case pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_GET:
		if errs := validateSubscriptionID("subscription.subscription_id", sub.GetSubscriptionId()); len(errs) > 0 {
			return nil, apierr.InvalidArgument(errs...)
		}
		resp, err = s.getSubscription(ctx, sub.GetSubscriptionId())
	case pdsv1.SubscriptionAction_SUBSCRIPTION_ACTION_SEEK:
		errs := validateSubscriptionID("subscription.subscription_id", sub.GetSubscriptionId())
		pos, seekErrs := seekPosition(msg.GetSeek())
		if errs = append(errs, seekErrs...); len(errs) > 0 {
			return nil, apierr.InvalidArgument(errs...)
		}
		resp, err = s.seekSubscription(ctx, sub.GetSubscriptionId(), pos)
	default:
		return nil, apierr.InvalidArgument(&apierr.FieldError{
			Field:       "action",
			Description: fmt.Sprintf("must be CREATE, UPDATE, DELETE, GET or SEEK (got %s)", msg.GetAction()),
		})
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (s *Service) createSubscription(ctx context.Context, sub *pdsv1.Subscription) (*pdsv1.SubscriptionResponse, error) {
	out, err := s.subscriptions.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{Subscription: sub}))
	if err != nil {
		return nil, controlPlaneError("create subscription", err)
	}
	return s.afterWrite(ctx, out.Msg.GetSubscription(), out.Msg.GetConfigVersion())
}

// updateSubscription changes workflow and filters, and the status when the request names a different one.
func (s *Service) updateSubscription(ctx context.Context, sub *pdsv1.Subscription) (*pdsv1.SubscriptionResponse, error) {
	status := sub.GetStatus()
	if status != "" && status != statusActive && status != statusPaused {
		return nil, apierr.InvalidArgument(&apierr.FieldError{
			Field:       "subscription.status",
			Description: fmt.Sprintf("must be %q or %q (got %q)", statusActive, statusPaused, status),
		})
	}
	out, err := s.subscriptions.UpdateSubscription(ctx, connect.NewRequest(&pdsv1.UpdateSubscriptionRequest{Subscription: sub}))
	if err != nil {
		return nil, controlPlaneError("update subscription", err)
	}
	updated, version := out.Msg.GetSubscription(), out.Msg.GetConfigVersion()
	if status != "" && status != updated.GetStatus() {
		enabled, err := s.subscriptions.SetSubscriptionEnabled(ctx, connect.NewRequest(&pdsv1.SetSubscriptionEnabledRequest{
			SubscriptionId: sub.GetSubscriptionId(),
			Enabled:        status == statusActive,
		}))
		if err != nil {
			return nil, controlPlaneError("change subscription status", err)
		}
		updated, version = enabled.Msg.GetSubscription(), enabled.Msg.GetConfigVersion()
	}
	return s.afterWrite(ctx, updated, version)
}

func (s *Service) deleteSubscription(ctx context.Context, subscriptionID string) (*pdsv1.SubscriptionResponse, error) {
	// Answer with the subscription as this node last knew it, so the caller sees what was removed.
	known, _ := s.config.Current().Subscription(s.tenantID, subscriptionID)
	out, err := s.subscriptions.DeleteSubscription(ctx, connect.NewRequest(&pdsv1.DeleteSubscriptionRequest{SubscriptionId: subscriptionID}))
	if err != nil {
		return nil, controlPlaneError("delete subscription", err)
	}
	var removed *pdsv1.Subscription
	if known != nil {
		removed = known.Proto
	}
	return s.afterWrite(ctx, removed, out.Msg.GetConfigVersion())
}

func (s *Service) getSubscription(ctx context.Context, subscriptionID string) (*pdsv1.SubscriptionResponse, error) {
	out, err := s.subscriptions.GetSubscription(ctx, connect.NewRequest(&pdsv1.GetSubscriptionRequest{SubscriptionId: subscriptionID}))
	if err != nil {
		return nil, controlPlaneError("get subscription", err)
	}
	return &pdsv1.SubscriptionResponse{Subscription: out.Msg.GetSubscription(), ConfigVersion: s.config.Current().Version}, nil
}

// afterWrite waits until this node applied the config version holding a control-plane write.
func (s *Service) afterWrite(ctx context.Context, sub *pdsv1.Subscription, version uint64) (*pdsv1.SubscriptionResponse, error) {
	waitCtx, cancel := context.WithTimeout(ctx, s.opts.ConfigWait)
	defer cancel()
	if _, err := s.config.WaitForVersion(waitCtx, version); err != nil {
		code := connect.CodeDeadlineExceeded
		if errors.Is(err, context.Canceled) {
			code = connect.CodeCanceled
		}
		return nil, connect.NewError(code, fmt.Errorf(
			"the control plane committed the change at config version %d but this node has applied only %d so far; it will apply it shortly: %w",
			version, s.config.Current().Version, err))
	}
	return &pdsv1.SubscriptionResponse{Subscription: sub, ConfigVersion: version}, nil
}

// controlPlaneError passes a control-plane answer through unchanged and names the operation otherwise.
func controlPlaneError(op string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s at the control plane: %w", op, err))
}

// seekPosition validates the SEEK request's position: exactly one of earliest (true), latest (true) or an
// RFC 3339 timestamp.
func seekPosition(seek *pdsv1.SeekPosition) (broker.SeekPosition, apierr.FieldErrors) {
	const choose = "one of earliest (true), latest (true) or timestamp (RFC 3339)"
	switch p := seek.GetPosition().(type) {
	case nil:
		if seek == nil {
			return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek", Description: "required for SEEK: " + choose}}
		}
		return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek", Description: "set " + choose}}
	case *pdsv1.SeekPosition_Earliest:
		if !p.Earliest {
			return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek.earliest", Description: "must be true when set; or set " + choose}}
		}
		return broker.SeekPosition{Earliest: true}, nil
	case *pdsv1.SeekPosition_Latest:
		if !p.Latest {
			return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek.latest", Description: "must be true when set; or set " + choose}}
		}
		return broker.SeekPosition{Latest: true}, nil
	case *pdsv1.SeekPosition_Timestamp:
		at, err := time.Parse(time.RFC3339Nano, p.Timestamp)
		if err != nil {
			return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek.timestamp",
				Description: fmt.Sprintf("must be an RFC 3339 time such as 2025-06-21T10:00:00.000Z (got %q)", p.Timestamp)}}
		}
		if at.IsZero() {
			// The broker reads a zero time as "no position"; nothing was stored that early anyway.
			return broker.SeekPosition{Earliest: true}, nil
		}
		return broker.SeekPosition{Time: at}, nil
	default:
		return broker.SeekPosition{}, apierr.FieldErrors{{Field: "seek", Description: "set " + choose}}
	}
}

// seekSubscription moves the subscription, as this node's config knows it, to pos at the broker. Every
// stream of the subscription, on any node, receives from the new position once the broker applied it.
func (s *Service) seekSubscription(ctx context.Context, subscriptionID string, pos broker.SeekPosition) (*pdsv1.SubscriptionResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	seeker, ok := s.broker.(broker.Seeker)
	if !ok {
		return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
			"seek subscription %q: this data plane's broker driver (%T) cannot move subscriptions", subscriptionID, s.broker))
	}
	cfg := s.config.Current()
	sub, ok := cfg.Subscription(s.tenantID, subscriptionID)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("seek subscription %q: no such subscription", subscriptionID))
	}
	topic, ok := cfg.Topic(s.tenantID, sub.Proto.GetTopicName())
	if !ok {
		return nil, failedPrecondition(
			fmt.Sprintf("seek subscription %q: its topic %q does not exist", subscriptionID, sub.Proto.GetTopicName()),
			&errdetails.PreconditionFailure_Violation{Type: "TOPIC_NOT_FOUND", Subject: "subscription.topic_name", Description: fmt.Sprintf("topic %q does not exist; create it or move the subscription to another topic", sub.Proto.GetTopicName())})
	}
	ref, err := delivery.SubscriptionRef(sub.Proto, topic)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("seek subscription %q: %w", subscriptionID, err))
	}
	// Nothing may have been published or streamed yet, so the topic may still be missing at the broker.
	if err := s.broker.EnsureTopic(ctx, ref.Topic); err != nil {
		return nil, toConnectError(fmt.Sprintf("seek subscription %q: ensure topic %q", subscriptionID, topic.GetTopicName()), err, connect.CodeUnavailable)
	}
	if err := seeker.Seek(ctx, ref, pos); err != nil {
		return nil, toConnectError(fmt.Sprintf("seek subscription %q", subscriptionID), err, connect.CodeUnavailable)
	}
	s.logger.Info("subscription moved", "tenant_id", s.tenantID, "subscription_id", subscriptionID,
		"earliest", pos.Earliest, "latest", pos.Latest, "time", pos.Time)
	return &pdsv1.SubscriptionResponse{Subscription: sub.Proto, ConfigVersion: cfg.Version}, nil
}
