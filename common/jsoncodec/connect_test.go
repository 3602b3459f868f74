package jsoncodec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
)

// publishService validates and routes events the way the data plane does, without a broker.
type publishService struct {
	pdsv1connect.UnimplementedPortfolioStreamHandler
}

func (publishService) Publish(_ context.Context, req *connect.Request[pdsv1.PublishRequest]) (*connect.Response[pdsv1.PublishResponse], error) {
	events := req.Msg.GetEvents()
	if err := routing.CheckBatch(len(events)); err != nil {
		return nil, apierr.FromError(err)
	}
	var problems apierr.FieldErrors
	for i, ev := range events {
		var errs apierr.FieldErrors
		if err := routing.Normalize(ev, fmt.Sprintf("events[%d]", i), time.Now()); errors.As(err, &errs) {
			problems = append(problems, errs...)
		} else if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
	}
	if len(problems) > 0 {
		return nil, apierr.FromError(problems)
	}
	resp := &pdsv1.PublishResponse{}
	for _, ev := range events {
		resp.Events = append(resp.Events, &pdsv1.PublishedEvent{
			EventId: ev.EventId, Topic: ev.Routing.Topic, RoutingKey: ev.Routing.RoutingKey,
			Partition: int32(routing.Partition(ev.Routing.RoutingKey, 1)),
		})
	}
	return connect.NewResponse(resp), nil
}

func startServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewPortfolioStreamHandler(publishService{}, connect.WithCodec(jsoncodec.Codec())))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func postJSON(t *testing.T, srv *httptest.Server, body string) (int, map[string]any) {
	t.Helper()
	resp, err := srv.Client().Post(srv.URL+pdsv1connect.PortfolioStreamPublishProcedure, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("POST Publish: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("response %s is not JSON: %v", b, err)
	}
	return resp.StatusCode, v
}

func TestConnectJSONHandlerSpeaksSnakeCase(t *testing.T) {
	t.Parallel()
	srv := startServer(t)

	status, got := postJSON(t, srv, `{"events":[{"data_type":"PORTFOLIO_STATE","data":{"portfolio_id":"portfolio_001","total_value":1000000}}]}`)

	if status != http.StatusOK {
		t.Fatalf("status %d, body %v", status, got)
	}
	events, _ := got["events"].([]any)
	if len(events) != 1 {
		t.Fatalf("response %v: want one published event", got)
	}
	published, _ := events[0].(map[string]any)
	for _, key := range []string{"event_id", "topic", "routing_key", "partition"} {
		if _, ok := published[key]; !ok {
			t.Errorf("published event %v lacks snake_case key %q", published, key)
		}
	}
	if published["routing_key"] != "portfolio_001.state.update" {
		t.Errorf("routing_key = %v, want the default portfolio_001.state.update", published["routing_key"])
	}
}

func TestConnectJSONHandlerRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	srv := startServer(t)

	status, got := postJSON(t, srv, `{"events":[{"data_type":"PORTFOLIO_STATE","dta":{}}]}`)

	if status != http.StatusBadRequest || got["code"] != "invalid_argument" {
		t.Errorf("unknown field: status %d body %v, want 400 invalid_argument", status, got)
	}
}

func TestConnectClientReceivesFieldViolations(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	client := pdsv1connect.NewPortfolioStreamClient(srv.Client(), srv.URL, connect.WithCodec(jsoncodec.Codec()))
	long := make([]byte, 245)
	for i := range long {
		long[i] = 't'
	}

	_, err := client.Publish(context.Background(), connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{
		{DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Data: &pdsv1.PortfolioData{PortfolioId: "p1"}},
		{DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Data: &pdsv1.PortfolioData{PortfolioId: "p2"}, Routing: &pdsv1.RoutingInfo{Topic: string(long), Priority: 10}},
	}}))

	if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
		t.Fatalf("Publish error %v has code %v, want invalid_argument", err, code)
	}
	violations := apierr.Violations(err)
	var fields []string
	for _, v := range violations {
		fields = append(fields, v.GetField())
	}
	if fmt.Sprint(fields) != "[events[1].routing.topic events[1].routing.priority]" {
		t.Errorf("field violations %v, want events[1].routing.topic and events[1].routing.priority", fields)
	}
	if len(violations) > 0 && violations[0].GetDescription() != "at most 200 characters (got 245); shorten the topic name" {
		t.Errorf("topic violation description = %q", violations[0].GetDescription())
	}
}
