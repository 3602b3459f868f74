package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
)

func TestRESTServesTheNewestStateAndPerformancePerPortfolio(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2, true)
	h.putTopic("portfolio/performance/attributed", pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION, 2, true)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	older := specExampleEvent()
	older.EventId, older.Data.TotalValue = "older", 999.0
	performance := specExampleEvent()
	performance.EventId, performance.DataType = "perf-1", pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION
	performance.Routing.TargetWorkflows = nil
	h.publish(ctx, older)
	h.publish(ctx, specExampleEvent(), performance)

	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantJSON   string
	}{
		{name: "newest state", path: "/api/v1/portfolio/portfolio_001/state", wantStatus: http.StatusOK, wantJSON: specExampleJSON},
		{name: "newest performance", path: "/api/v1/portfolio/portfolio_001/performance", wantStatus: http.StatusOK, wantJSON: `{
			"event_id": "perf-1", "timestamp": "2025-06-21T10:00:00.000Z",
			"distribution": {"topic": "portfolio/performance/attributed", "routing_key": "portfolio_001.performance.update", "target_workflows": []},
			"data": {"portfolio_id": "portfolio_001", "total_value": 1000000.00, "performance_metrics": {"daily_return": 0.012, "ytd_return": 0.085}}}`},
		{name: "portfolio without state", path: "/api/v1/portfolio/portfolio_404/state", wantStatus: http.StatusNotFound,
			wantJSON: `{"error":{"code":"not_found","message":"no state for portfolio \"portfolio_404\" yet"}}`},
		{name: "portfolio without performance", path: "/api/v1/portfolio/portfolio_404/performance", wantStatus: http.StatusNotFound,
			wantJSON: `{"error":{"code":"not_found","message":"no performance for portfolio \"portfolio_404\" yet"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := getJSON(t, h.url+tt.path)
			if status != tt.wantStatus {
				t.Fatalf("GET %s: status %d, want %d; body %s", tt.path, status, tt.wantStatus, body)
			}
			assertSameJSON(t, "GET "+tt.path, body, tt.wantJSON)
		})
	}
}

func TestRESTRejectsABadPortfolioID(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path := "/api/v1/portfolio/" + strings.Repeat("p", 101) + "/state"
	status, body := getJSON(t, h.url+path)
	if status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400; body %s", status, body)
	}
	var got struct {
		Error struct {
			Code            string `json:"code"`
			Message         string `json:"message"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"field_violations"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body is not the error shape: %v\n%s", err, body)
	}
	if got.Error.Code != "invalid_argument" || !strings.Contains(got.Error.Message, "portfolio_id") ||
		len(got.Error.FieldViolations) != 1 || got.Error.FieldViolations[0].Field != "portfolio_id" {
		t.Fatalf("error %+v, want invalid_argument naming portfolio_id", got.Error)
	}
}

func wsURL(h *harness, query string) string {
	return "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/ws?" + query
}

func readFrame(ctx context.Context, t *testing.T, conn *websocket.Conn) []byte {
	t.Helper()
	typ, data, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read websocket frame: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("frame type %v, want text", typ)
	}
	return data
}

func TestWebSocketDeliversEventsAndTakesAckFrames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 1, true)
	h.putSubscription("ui", stateTopic, "user_interface", "active")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL(h, "subscription_id=ui&max_in_flight=10"), nil)
	if err != nil {
		t.Fatalf("dial websocket: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })

	h.publish(ctx, specExampleEvent())
	frame := readFrame(ctx, t, conn)
	var raw struct {
		Events []struct {
			AckID string          `json:"ack_id"`
			Event json.RawMessage `json:"event"`
		} `json:"events"`
	}
	if err := json.Unmarshal(frame, &raw); err != nil || len(raw.Events) != 1 {
		t.Fatalf("frame %s: want a PortfolioMessage with one event (error %v)", frame, err)
	}
	assertSameJSON(t, "websocket event", raw.Events[0].Event, specExampleJSON)
	var msg pdsv1.PortfolioMessage
	if err := jsoncodec.Unmarshal(frame, &msg); err != nil {
		t.Fatalf("frame is not a PortfolioMessage: %v", err)
	}
	ackID := msg.GetEvents()[0].GetAckId()

	ackFrame, _ := json.Marshal(map[string][]string{"ack_ids": {ackID}})
	if err := conn.Write(ctx, websocket.MessageText, ackFrame); err != nil {
		t.Fatalf("write ack frame: %v", err)
	}
	// The ack was applied if acknowledging again reports the id as unknown.
	if err := conn.Write(ctx, websocket.MessageText, ackFrame); err != nil {
		t.Fatalf("write second ack frame: %v", err)
	}
	var reply pdsv1.AcknowledgeResponse
	if err := jsoncodec.Unmarshal(readFrame(ctx, t, conn), &reply); err != nil || !slices.Equal(reply.GetUnknownAckIds(), []string{ackID}) {
		t.Fatalf("reply to the repeated ack: %v (error %v); want %q unknown", &reply, err, ackID)
	}

	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"ack":"nope"}`)); err != nil {
		t.Fatalf("write bad frame: %v", err)
	}
	var bad struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if data := readFrame(ctx, t, conn); json.Unmarshal(data, &bad) != nil || bad.Error.Code != "invalid_argument" {
		t.Fatalf("reply to a bad frame %s, want an invalid_argument error frame", data)
	}
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close websocket: %v", err)
	}
}

func TestWebSocketRefusesBeforeUpgrading(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantCode   string
	}{
		{name: "unknown subscription", query: "subscription_id=nobody", wantStatus: http.StatusNotFound, wantCode: "not_found"},
		{name: "no subscription id", query: "", wantStatus: http.StatusBadRequest, wantCode: "invalid_argument"},
		{name: "max in flight not a number", query: "subscription_id=x&max_in_flight=lots", wantStatus: http.StatusBadRequest, wantCode: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			conn, resp, err := websocket.Dial(ctx, wsURL(h, tt.query), nil)
			if err == nil {
				_ = conn.CloseNow()
				t.Fatal("websocket opened, want it refused")
			}
			if resp == nil || resp.StatusCode != tt.wantStatus {
				t.Fatalf("response %v, want status %d (error %v)", resp, tt.wantStatus, err)
			}
			var body struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != tt.wantCode {
				t.Fatalf("body code %q (decode error %v), want %q", body.Error.Code, err, tt.wantCode)
			}
		})
	}
}
