package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/api"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"google.golang.org/protobuf/proto"
)

// testTimeout bounds every wait of a test.
const testTimeout = 20 * time.Second

// harness is one data-plane API served over HTTP, with the real embedded broker, a real config FSM fed
// through raft log entries, the real delivery engine, and a stand-in control plane whose subscription
// writes go to the same FSM.
type harness struct {
	t      testing.TB
	fsm    *configfsm.FSM
	url    string
	client pdsv1connect.PortfolioStreamClient
	// h2cClient speaks HTTP/2 without TLS to the server; set with harnessOptions.h2c.
	h2cClient *http.Client

	applyMu sync.Mutex
	index   uint64

	// catchingUp makes the node report itself not ready.
	catchingUp atomic.Bool
}

// harnessOptions vary the harness for benchmarks; the zero value is what tests use.
type harnessOptions struct {
	// h2c serves HTTP/2 without TLS, as the data-plane binary does, and gives the harness an HTTP/2 client
	// in h2cClient. Otherwise the server speaks HTTP/1.1.
	h2c bool
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{})
}

func newHarnessWith(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test with the embedded broker; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })

	h := &harness{t: t, fsm: configfsm.New(filter.Compiler)}
	deliveries, err := delivery.NewService(delivery.Deps{Broker: b, Config: h.fsm.Current, Logger: logger},
		delivery.Options{AckDeadline: 30 * time.Second})
	if err != nil {
		t.Fatalf("new delivery service: %v", err)
	}
	t.Cleanup(func() { _ = deliveries.Close() })

	controlPlane := http.NewServeMux()
	controlPlane.Handle(pdsv1connect.NewSubscriptionServiceHandler(&standInControlPlane{h: h}))
	cpServer := httptest.NewServer(controlPlane)
	t.Cleanup(cpServer.Close)

	service, err := api.New(api.Deps{
		Broker:        b,
		Delivery:      deliveries,
		Config:        h.fsm,
		Subscriptions: pdsv1connect.NewSubscriptionServiceClient(cpServer.Client(), cpServer.URL),
		Logger:        logger,
		Ready: func() (bool, uint64, string) {
			return !h.catchingUp.Load(), h.fsm.Current().Version, "catching up with the configuration"
		},
	}, api.Options{ConfigWait: 5 * time.Second})
	if err != nil {
		t.Fatalf("new api service: %v", err)
	}
	t.Cleanup(func() { _ = service.Close(context.Background()) })
	mux := http.NewServeMux()
	service.Register(mux)
	server := httptest.NewUnstartedServer(mux)
	var httpClient *http.Client
	if opts.h2c {
		server.Config.Protocols = new(http.Protocols)
		server.Config.Protocols.SetHTTP1(true)
		server.Config.Protocols.SetUnencryptedHTTP2(true)
		transport := &http.Transport{Protocols: new(http.Protocols)}
		transport.Protocols.SetUnencryptedHTTP2(true)
		httpClient = &http.Client{Transport: transport}
		h.h2cClient = httpClient
		t.Cleanup(transport.CloseIdleConnections)
	}
	server.Start()
	if httpClient == nil {
		httpClient = server.Client()
	}
	// Streams and WebSockets end with the delivery sessions; close those first so the server can drain.
	t.Cleanup(server.Close)
	t.Cleanup(func() { _ = deliveries.Close() })
	h.url = server.URL
	h.client = pdsv1connect.NewPortfolioStreamClient(httpClient, server.URL, connect.WithCodec(jsoncodec.Codec()))
	return h
}

// apply commits one config command to the FSM as the next raft log entry and returns its index.
func (h *harness) apply(kind configv1.CommandType, msg proto.Message) uint64 {
	h.t.Helper()
	data, err := configfsm.EncodeCommand(kind, msg)
	if err != nil {
		h.t.Fatalf("encode %s: %v", kind, err)
	}
	h.applyMu.Lock()
	defer h.applyMu.Unlock()
	h.index++
	if res := h.fsm.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}); res != nil {
		h.t.Fatalf("apply %s: %v", kind, res)
	}
	return h.index
}

func (h *harness) putTopic(name string, dataType pdsv1.PortfolioDataType, partitions int32, enabled bool) *pdsv1.Topic {
	topic := &pdsv1.Topic{
		Id:         uuid.NewString(),
		TenantId:   tenancy.DefaultTenantID,
		TopicName:  name,
		DataType:   dataType,
		Partitions: partitions,
		Enabled:    enabled,
		CreatedAt:  time.Now().UTC().Format(time.RFC3339Nano),
	}
	h.apply(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{Topic: topic})
	return topic
}

func (h *harness) putSubscription(subscriptionID, topic, workflow, status string) *pdsv1.Subscription {
	sub := &pdsv1.Subscription{
		Id:                 uuid.NewString(),
		TenantId:           tenancy.DefaultTenantID,
		SubscriptionId:     subscriptionID,
		TopicName:          topic,
		SubscriberWorkflow: workflow,
		Status:             status,
		CreatedAt:          time.Now().UTC().Format(time.RFC3339Nano),
	}
	h.apply(configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION, &configv1.PutSubscription{Subscription: sub})
	return sub
}

func (h *harness) publish(ctx context.Context, events ...*pdsv1.PortfolioDistribution) *pdsv1.PublishResponse {
	h.t.Helper()
	resp, err := h.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events}))
	if err != nil {
		h.t.Fatalf("publish %d events: %v", len(events), err)
	}
	return resp.Msg
}

// openStream starts StreamPortfolio; the stream ends with the test.
func (h *harness) openStream(ctx context.Context, req *pdsv1.StreamRequest) *connect.ServerStreamForClient[pdsv1.PortfolioMessage] {
	h.t.Helper()
	stream, err := h.client.StreamPortfolio(ctx, connect.NewRequest(req))
	if err != nil {
		h.t.Fatalf("open stream of %q: %v", req.GetSubscriptionId(), err)
	}
	h.t.Cleanup(func() { _ = stream.Close() })
	return stream
}

// receiveEvents reads messages until n events arrived.
func receiveEvents(t *testing.T, stream *connect.ServerStreamForClient[pdsv1.PortfolioMessage], n int) []*pdsv1.DeliveredEvent {
	t.Helper()
	var got []*pdsv1.DeliveredEvent
	for len(got) < n {
		if !stream.Receive() {
			t.Fatalf("stream ended after %d of %d events: %v", len(got), n, stream.Err())
		}
		got = append(got, stream.Msg().GetEvents()...)
	}
	return got
}

// specExampleEvent is the specification's example, as a producer publishes it.
func specExampleEvent() *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		EventId:   "uuid",
		Timestamp: "2025-06-21T10:00:00.000Z",
		DataType:  pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        "portfolio_001",
			TotalValue:         1000000.00,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.012, YtdReturn: 0.085},
		},
		Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"reporting_analytics", "user_interface"}},
	}
}

// specExampleJSON is the specification's example portfolio_distributed event.
const specExampleJSON = `{
    "event_id": "uuid",
    "timestamp": "2025-06-21T10:00:00.000Z",
    "distribution": {
        "topic": "portfolio/state/updated",
        "routing_key": "portfolio_001.state.update",
        "target_workflows": ["reporting_analytics", "user_interface"]
    },
    "data": {
        "portfolio_id": "portfolio_001",
        "total_value": 1000000.00,
        "performance_metrics": {"daily_return": 0.012, "ytd_return": 0.085}
    }
}`

// assertSameJSON fails unless got and want hold equal JSON values (numbers compared as numbers).
func assertSameJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var gotValue, wantValue any
	if err := json.Unmarshal(got, &gotValue); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &wantValue); err != nil {
		t.Fatalf("expected JSON of %s is invalid: %v", what, err)
	}
	if !reflect.DeepEqual(gotValue, wantValue) {
		t.Fatalf("%s differs from the expected JSON\n got: %s\nwant: %s", what, got, want)
	}
}

func getJSON(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read GET %s: %v", url, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	return resp.StatusCode, body
}

// connectCode returns err's Connect code, failing the test when err is nil.
func connectCode(t *testing.T, err error) connect.Code {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got none")
	}
	return connect.CodeOf(err)
}

// standInControlPlane answers SubscriptionService the way the control plane does for the calls the data
// plane forwards: it commits the change to the (real) replicated config and returns the raft index before
// the node has applied it, so ManageSubscription must wait for its own config.
type standInControlPlane struct {
	pdsv1connect.UnimplementedSubscriptionServiceHandler
	h *harness
}

func (c *standInControlPlane) CreateSubscription(_ context.Context, req *connect.Request[pdsv1.CreateSubscriptionRequest]) (*connect.Response[pdsv1.CreateSubscriptionResponse], error) {
	in := req.Msg.GetSubscription()
	if _, exists := c.h.fsm.Current().Subscription(tenancy.DefaultTenantID, in.GetSubscriptionId()); exists {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("subscription %q already exists", in.GetSubscriptionId()))
	}
	sub := proto.Clone(in).(*pdsv1.Subscription)
	sub.Id, sub.TenantId, sub.Status = uuid.NewString(), tenancy.DefaultTenantID, "active"
	sub.CreatedAt = time.Now().UTC().Format(time.RFC3339Nano)
	version := c.applyLater(configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION, &configv1.PutSubscription{Subscription: sub})
	return connect.NewResponse(&pdsv1.CreateSubscriptionResponse{Subscription: sub, ConfigVersion: version}), nil
}

func (c *standInControlPlane) DeleteSubscription(_ context.Context, req *connect.Request[pdsv1.DeleteSubscriptionRequest]) (*connect.Response[pdsv1.DeleteSubscriptionResponse], error) {
	if _, exists := c.h.fsm.Current().Subscription(tenancy.DefaultTenantID, req.Msg.GetSubscriptionId()); !exists {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("subscription not found"))
	}
	version := c.applyLater(configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION, &configv1.DeleteSubscription{
		TenantId: tenancy.DefaultTenantID, SubscriptionId: req.Msg.GetSubscriptionId(),
	})
	return connect.NewResponse(&pdsv1.DeleteSubscriptionResponse{ConfigVersion: version}), nil
}

// applyLater reserves the next raft index and applies the command from another goroutine, as replication
// to a non-voter does.
func (c *standInControlPlane) applyLater(kind configv1.CommandType, msg proto.Message) uint64 {
	data, err := configfsm.EncodeCommand(kind, msg)
	if err != nil {
		panic(err)
	}
	c.h.applyMu.Lock()
	c.h.index++
	index := c.h.index
	go func() {
		defer c.h.applyMu.Unlock()
		c.h.fsm.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	}()
	return index
}
