package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
)

// A WebSocket subscriber receives events as JSON frames and acknowledges them with {"ack_ids": […]} frames;
// an acknowledged event is not delivered again.
func TestWebSocketSubscriberReceivesAndAcknowledges(t *testing.T) {
	t.Parallel()
	webSocketSubscriberReceivesAndAcknowledges(t, embeddedBroker)
}

func webSocketSubscriberReceivesAndAcknowledges(t *testing.T, broker brokerSetup) {
	c := startClusterOn(t, broker)
	tl := newTally(t)
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2)
	c.createSubscription("ws-state", stateTopic, "user_interface")

	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(c.dpURL, "http") + "/api/v1/ws?subscription_id=ws-state"
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })

	first := c.publish(specExampleEvent())
	tl.expect(first)
	kind, frame, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the first frame: %v", err)
	}
	if kind != websocket.MessageText {
		t.Fatalf("frame type %v, want text", kind)
	}
	var msg pdsv1.PortfolioMessage
	if err := jsoncodec.Unmarshal(frame, &msg); err != nil {
		t.Fatalf("frame is not a PortfolioMessage in JSON: %v\n%s", err, frame)
	}
	if len(msg.GetEvents()) != 1 {
		t.Fatalf("frame holds %d events, want 1: %s", len(msg.GetEvents()), frame)
	}
	got := msg.GetEvents()[0]
	tl.count(got)
	if got.GetEvent().GetEventId() != first[0].GetEventId() {
		t.Fatalf("got event %q, want %q", got.GetEvent().GetEventId(), first[0].GetEventId())
	}
	if !strings.Contains(string(frame), `"routing_key":"portfolio_001.state.update"`) {
		t.Errorf("frame does not use the specification's snake_case names: %s", frame)
	}
	ack := `{"ack_ids":["` + got.GetAckId() + `"]}`
	if err := conn.Write(ctx, websocket.MessageText, []byte(ack)); err != nil {
		t.Fatalf("send ack frame: %v", err)
	}
	// The server reads frames in order, so once the close handshake completes it has handled the ack frame.
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close the WebSocket: %v", err)
	}

	// A stream opened afterwards shows whether the ack took effect: its next event must be a new one, not
	// the first event again.
	sub := openStream(t, c.stream, "ws-state", tl)
	second := c.publish(portfolioEvent("portfolio_002", 2_000_000))
	tl.expect(second)
	next := sub.next()
	if next.GetEvent().GetEventId() != second[0].GetEventId() {
		t.Fatalf("after acknowledging over WebSocket the next event is %q (attempt %d), want the new %q",
			next.GetEvent().GetEventId(), next.GetDeliveryAttempt(), second[0].GetEventId())
	}
	c.acknowledge("ws-state", next)
}
