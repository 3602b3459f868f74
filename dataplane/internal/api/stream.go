package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
)

const (
	// maxSubscriptionIDLength is the specification's limit of portfolio_subscriptions.subscription_id.
	maxSubscriptionIDLength = 100
	// maxStreamInFlight is the most unacknowledged events a stream may ask to hold.
	maxStreamInFlight = 10000
	// maxAckIDsPerRequest bounds one Acknowledge call (one full window of the largest stream).
	maxAckIDsPerRequest = maxStreamInFlight
)

// StreamPortfolio sends the subscription's events, one PortfolioMessage per ready batch, until the client
// goes away or the subscription stops being streamable (paused, deleted).
func (s *Service) StreamPortfolio(ctx context.Context, req *connect.Request[pdsv1.StreamRequest], stream *connect.ServerStream[pdsv1.PortfolioMessage]) error {
	session, err := s.openSession(ctx, req.Msg, sendsProto(req.Header()))
	if err != nil {
		return err
	}
	defer s.closeSession(session, req.Msg.GetSubscriptionId())
	s.metrics.streamsActive.Add(ctx, 1, transportConnect)
	defer s.metrics.streamsActive.Add(context.WithoutCancel(ctx), -1, transportConnect)
	// Send the response headers now, so the client knows the stream is open before the first event.
	if err := stream.Send(nil); err != nil {
		return err
	}

	for {
		events, err := session.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// The client went away; its unacknowledged events are redelivered.
				return nil
			}
			if shuttingDown(err) {
				return connect.NewError(connect.CodeUnavailable, errors.New("the data plane is shutting down; reconnect to resume (unacknowledged events are delivered again)"))
			}
			return toConnectError(fmt.Sprintf("stream subscription %q", req.Msg.GetSubscriptionId()), err, connect.CodeUnavailable)
		}
		if len(events) == 0 {
			continue
		}
		if err := stream.Send(&pdsv1.PortfolioMessage{Events: events}); err != nil {
			return err
		}
		s.metrics.streamedEvents.Add(ctx, int64(len(events)), transportConnect)
	}
}

// validateStreamRequest checks a stream's parameters, naming each bad field.
func validateStreamRequest(req *pdsv1.StreamRequest) error {
	var errs apierr.FieldErrors
	errs = append(errs, validateSubscriptionID("subscription_id", req.GetSubscriptionId())...)
	if n := req.GetMaxInFlight(); n < 0 || n > maxStreamInFlight {
		errs = append(errs, &apierr.FieldError{
			Field:       "max_in_flight",
			Description: fmt.Sprintf("must be 0 (the node's default) to %d (got %d)", maxStreamInFlight, n),
		})
	}
	if len(errs) > 0 {
		return apierr.InvalidArgument(errs...)
	}
	return nil
}

func validateSubscriptionID(field, id string) apierr.FieldErrors {
	switch n := utf8.RuneCountInString(id); {
	case id == "":
		return apierr.FieldErrors{{Field: field, Description: "required; name the subscription to read"}}
	case n > maxSubscriptionIDLength:
		return apierr.FieldErrors{{Field: field, Description: fmt.Sprintf("at most %d characters (got %d)", maxSubscriptionIDLength, n)}}
	}
	return nil
}

// sendsProto reports whether a stream's messages go out in the protobuf binary encoding (by its request's
// content type: gRPC's default, or a "+proto" subtype of gRPC, gRPC-Web and Connect), so its events can
// stay encoded as stored.
func sendsProto(header http.Header) bool {
	contentType := header.Get("Content-Type")
	return contentType == "application/grpc" || strings.HasSuffix(contentType, "+"+protoCodecName)
}

// openSession validates a stream request and opens its delivery session. With encodedEvents the session
// may hand out events left in their protobuf encoding (delivery.StreamOptions.EncodedEvents).
func (s *Service) openSession(ctx context.Context, req *pdsv1.StreamRequest, encodedEvents bool) (*delivery.Session, error) {
	if err := validateStreamRequest(req); err != nil {
		return nil, err
	}
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	session, err := s.delivery.Open(ctx, s.tenantID, req.GetSubscriptionId(), delivery.StreamOptions{
		MaxInFlight:   int(req.GetMaxInFlight()),
		AutoAck:       req.GetAutoAck(),
		EncodedEvents: encodedEvents,
	})
	if err != nil {
		return nil, toConnectError(fmt.Sprintf("open stream of subscription %q", req.GetSubscriptionId()), err, connect.CodeUnavailable)
	}
	return session, nil
}

func (s *Service) closeSession(session *delivery.Session, subscriptionID string) {
	if err := session.Close(); err != nil {
		s.logger.Warn("close delivery session", "subscription_id", subscriptionID, "error", err)
	}
}

// Acknowledge confirms delivered events. Ack ids this node does not know are reported, not failed: their
// events are redelivered (or were already acknowledged).
func (s *Service) Acknowledge(ctx context.Context, req *connect.Request[pdsv1.AcknowledgeRequest]) (*connect.Response[pdsv1.AcknowledgeResponse], error) {
	unknown, err := s.acknowledge(ctx, req.Msg.GetSubscriptionId(), req.Msg.GetAckIds())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.AcknowledgeResponse{UnknownAckIds: unknown}), nil
}

func (s *Service) acknowledge(ctx context.Context, subscriptionID string, ackIDs []string) ([]string, error) {
	errs := validateSubscriptionID("subscription_id", subscriptionID)
	switch {
	case len(ackIDs) == 0:
		errs = append(errs, &apierr.FieldError{Field: "ack_ids", Description: "required; pass the ack_id of each delivered event to confirm"})
	case len(ackIDs) > maxAckIDsPerRequest:
		errs = append(errs, &apierr.FieldError{Field: "ack_ids", Description: fmt.Sprintf("at most %d per request (got %d); split the acknowledgements", maxAckIDsPerRequest, len(ackIDs))})
	}
	for i, id := range ackIDs {
		if id == "" {
			errs = append(errs, &apierr.FieldError{Field: fmt.Sprintf("ack_ids[%d]", i), Description: "empty; events of auto_ack streams need no acknowledgement"})
		}
	}
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	unknown, err := s.delivery.Acknowledge(ctx, s.tenantID, subscriptionID, ackIDs)
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil, connect.NewError(connect.CodeCanceled, err)
		}
		return nil, toConnectError(fmt.Sprintf("acknowledge events of subscription %q", subscriptionID), err, connect.CodeUnavailable)
	}
	return unknown, nil
}

// shuttingDown reports whether a delivery error means this node is closing its streams.
func shuttingDown(err error) bool {
	return errors.Is(err, delivery.ErrSessionClosed) || errors.Is(err, delivery.ErrServiceClosed)
}
