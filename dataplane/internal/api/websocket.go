package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
)

// maxWebSocketFrameBytes bounds a client frame: a full window of ack ids fits with room to spare.
const maxWebSocketFrameBytes = 1 << 20

// ackFrame is what a WebSocket client sends to acknowledge events.
type ackFrame struct {
	AckIDs []string `json:"ack_ids"`
}

// serveWebSocket streams a subscription over a WebSocket: GET /api/v1/ws?subscription_id=…&max_in_flight=…&auto_ack=….
//
// Server frames are text: a PortfolioMessage as JSON for each delivery batch; {"unknown_ack_ids":[…]}
// after an ack frame naming ids this node no longer knew; {"error":{"code","message",…}} for a bad client
// frame (the stream goes on) or before the server closes the stream. Client frames are
// {"ack_ids":["…"]}. Problems found before the upgrade (bad query, unknown subscription) are answered as
// plain HTTP errors in the same {"error":…} shape.
func (s *Service) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	req, err := parseStreamQuery(r.URL.Query())
	if err != nil {
		writeJSONError(w, err)
		return
	}
	streamCtx, stopStream := context.WithCancel(r.Context())
	defer stopStream()
	session, err := s.openSession(streamCtx, req, false) // WebSocket frames are JSON
	if err != nil {
		writeJSONError(w, err)
		return
	}
	defer s.closeSession(session, req.GetSubscriptionId())

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.opts.WebSocketOriginPatterns})
	if err != nil {
		// Accept has answered the request already.
		s.logger.InfoContext(r.Context(), "websocket upgrade refused", "subscription_id", req.GetSubscriptionId(), "error", err)
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxWebSocketFrameBytes)
	s.metrics.streamsActive.Add(r.Context(), 1, transportWebSocket)
	defer s.metrics.streamsActive.Add(context.WithoutCancel(r.Context()), -1, transportWebSocket)

	// Reads must not use streamCtx: a cancelled read closes the connection before the close handshake.
	readCtx, stopReading := context.WithCancel(context.WithoutCancel(r.Context()))
	defer stopReading()
	peerGone := make(chan struct{})
	go func() {
		defer close(peerGone)
		defer stopStream()
		s.readAckFrames(readCtx, streamCtx, conn, req.GetSubscriptionId())
	}()
	go s.pingUntilDone(streamCtx, conn, stopStream)

	code, reason := s.pumpEvents(streamCtx, conn, session, req.GetSubscriptionId())
	select {
	case <-peerGone:
		return
	default:
	}
	if r.Context().Err() != nil {
		code, reason = websocket.StatusGoingAway, "server shutting down; reconnect to resume"
	}
	_ = conn.Close(code, reason)
}

// pumpEvents sends delivery batches until the stream ends and returns the close status to send.
func (s *Service) pumpEvents(ctx context.Context, conn *websocket.Conn, session *delivery.Session, subscriptionID string) (websocket.StatusCode, string) {
	// Write returns once the frame is written, so one buffer serves every frame of the stream.
	var frame []byte
	for {
		events, err := session.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return websocket.StatusNormalClosure, ""
			}
			if shuttingDown(err) {
				return websocket.StatusGoingAway, "server shutting down; reconnect to resume"
			}
			ce := toConnectError(fmt.Sprintf("stream subscription %q", subscriptionID), err, connect.CodeUnavailable)
			s.writeErrorFrame(ctx, conn, ce)
			return websocket.StatusPolicyViolation, closeReason(ce)
		}
		if len(events) == 0 {
			continue
		}
		frame, err = s.json.appendMessage(frame[:0], &pdsv1.PortfolioMessage{Events: events})
		if err != nil {
			ce := connect.NewError(connect.CodeInternal, fmt.Errorf("encode events: %w", err))
			s.writeErrorFrame(ctx, conn, ce)
			return websocket.StatusInternalError, closeReason(ce)
		}
		if err := conn.Write(ctx, websocket.MessageText, frame); err != nil {
			return websocket.StatusNormalClosure, ""
		}
		s.metrics.streamedEvents.Add(ctx, int64(len(events)), transportWebSocket)
	}
}

// readAckFrames acknowledges the events named by client frames until the peer goes away.
func (s *Service) readAckFrames(readCtx, streamCtx context.Context, conn *websocket.Conn, subscriptionID string) {
	for {
		_, data, err := conn.Read(readCtx)
		if err != nil {
			return
		}
		var frame ackFrame
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&frame); err != nil || dec.More() {
			if err == nil {
				err = errors.New("trailing data after the JSON object")
			}
			s.writeErrorFrame(streamCtx, conn, apierr.InvalidArgument(&apierr.FieldError{
				Field:       "frame",
				Description: fmt.Sprintf(`expected {"ack_ids":["…"]}: %v`, err),
			}))
			continue
		}
		unknown, err := s.acknowledge(streamCtx, subscriptionID, frame.AckIDs)
		if err != nil {
			s.writeErrorFrame(streamCtx, conn, err)
			continue
		}
		if len(unknown) > 0 {
			reply, err := jsoncodec.Marshal(&pdsv1.AcknowledgeResponse{UnknownAckIds: unknown})
			if err == nil {
				_ = conn.Write(streamCtx, websocket.MessageText, reply)
			}
		}
	}
}

// pingUntilDone pings the peer while the stream lives and stops the stream when a ping goes unanswered,
// so a vanished client's events are redelivered without waiting for TCP to notice.
func (s *Service) pingUntilDone(ctx context.Context, conn *websocket.Conn, stopStream context.CancelFunc) {
	ticker := time.NewTicker(s.opts.WebSocketPingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			pingCtx, cancel := context.WithTimeout(ctx, s.opts.WebSocketPingInterval)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				stopStream()
				return
			}
		}
	}
}

func (s *Service) writeErrorFrame(ctx context.Context, conn *websocket.Conn, err error) {
	data, merr := json.Marshal(newJSONError(err))
	if merr != nil {
		return
	}
	_ = conn.Write(ctx, websocket.MessageText, data)
}

// closeReason fits a close reason into the 123 bytes a close frame allows.
func closeReason(err error) string {
	reason := newJSONError(err).Error.Code + ": " + newJSONError(err).Error.Message
	if len(reason) > 123 {
		reason = reason[:120] + "..."
	}
	return reason
}

// parseStreamQuery reads a StreamRequest from the WebSocket URL's query.
func parseStreamQuery(q url.Values) (*pdsv1.StreamRequest, error) {
	req := &pdsv1.StreamRequest{SubscriptionId: q.Get("subscription_id")}
	var errs apierr.FieldErrors
	if v := q.Get("max_in_flight"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			errs = append(errs, &apierr.FieldError{Field: "max_in_flight", Description: fmt.Sprintf("must be a whole number from 0 to %d (got %q)", maxStreamInFlight, v)})
		}
		req.MaxInFlight = int32(n)
	}
	if v := q.Get("auto_ack"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, &apierr.FieldError{Field: "auto_ack", Description: fmt.Sprintf("must be true or false (got %q)", v)})
		}
		req.AutoAck = b
	}
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	if err := validateStreamRequest(req); err != nil {
		return nil, err
	}
	return req, nil
}
