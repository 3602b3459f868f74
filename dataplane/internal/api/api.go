// Package api serves the data plane's public surfaces: the PortfolioStream Connect service (Connect, gRPC
// and gRPC-Web), the REST latest-state views and the WebSocket stream. Every JSON surface uses the
// specification's snake_case names through jsoncodec.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"github.com/pds-platform/pds/dataplane/internal/latest"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// MaxRequestBytes bounds one decoded request (a full Publish batch of 1000 events averaging 32 KiB);
// a larger one fails with ResourceExhausted before it is decoded.
const MaxRequestBytes = 32 << 20

// ConfigSource is the node's replicated configuration (a *configfsm.FSM). Current never blocks;
// WaitForVersion blocks until the node has applied at least version or ctx ends.
type ConfigSource interface {
	Current() *configfsm.Config
	WaitForVersion(ctx context.Context, version uint64) (*configfsm.Config, error)
}

// Deps are the collaborators of the Service. All but Meter and Tracer are required.
type Deps struct {
	Broker   broker.Broker
	Delivery *delivery.Service
	Config   ConfigSource
	// Subscriptions is the control plane's SubscriptionService; ManageSubscription forwards to it.
	Subscriptions pdsv1connect.SubscriptionServiceClient
	Logger        *slog.Logger
	// Ready reports whether the node holds a current config (the follower's readiness). Until it does,
	// Publish and streams answer Unavailable, a retryable code, rather than judging topics and
	// subscriptions against an empty or stale config. Nil means always ready.
	Ready func() (ready bool, configVersion uint64, reason string)
	// Meter and Tracer default to the OpenTelemetry globals when nil.
	Meter  metric.Meter
	Tracer trace.Tracer
}

// Options tune the Service.
type Options struct {
	// TenantID every request belongs to. Empty means tenancy.DefaultTenantID.
	TenantID string
	// ConfigWait bounds how long ManageSubscription waits for this node to apply a change the control
	// plane committed (the request's own deadline applies too). Zero means 10s.
	ConfigWait time.Duration
	// WebSocketPingInterval is how often an idle WebSocket is pinged to find dead peers. Zero means 30s.
	WebSocketPingInterval time.Duration
	// WebSocketOriginPatterns are the host patterns of browser origins allowed to open a WebSocket besides
	// the data plane's own (see websocket.AcceptOptions). Empty allows the same origin only; clients that
	// send no Origin header (non-browsers) are always allowed.
	WebSocketOriginPatterns []string
	// CompressMinBytes: Connect and gRPC messages smaller than this many bytes are sent uncompressed even
	// when the client accepts gzip. Gzip costs several microseconds per event, as much as the rest of the
	// delivery path, and saves little on small messages. Zero means 64 KiB; negative compresses every
	// message the client lets us.
	CompressMinBytes int
}

// defaultCompressMinBytes is Options.CompressMinBytes when zero.
const defaultCompressMinBytes = 64 << 10

// Service implements pdsv1connect.PortfolioStreamHandler and the REST and WebSocket endpoints.
type Service struct {
	broker        broker.Broker
	delivery      *delivery.Service
	config        ConfigSource
	subscriptions pdsv1connect.SubscriptionServiceClient
	latest        *latest.Store
	ready         func() (bool, uint64, string)
	logger        *slog.Logger
	tracer        trace.Tracer
	metrics       *metrics
	tenantID      string
	opts          Options
	// keepsProperties: the broker stores record properties, so Publish builds them.
	keepsProperties bool
	// json and proto write stream messages for JSON and protobuf subscribers, each sharing an event's
	// encoding among all the streams that deliver it.
	json  *jsonEncoder
	proto *protoEncoder

	// ensuredTopics remembers the topic shapes already created at the broker (key: ensuredTopic).
	ensuredTopics sync.Map
}

var _ pdsv1connect.PortfolioStreamHandler = (*Service)(nil)

// New builds the Service; it fails when a required dependency is missing.
func New(deps Deps, opts Options) (*Service, error) {
	switch {
	case deps.Broker == nil:
		return nil, errors.New("new api service: Deps.Broker is nil")
	case deps.Delivery == nil:
		return nil, errors.New("new api service: Deps.Delivery is nil")
	case deps.Config == nil:
		return nil, errors.New("new api service: Deps.Config is nil")
	case deps.Subscriptions == nil:
		return nil, errors.New("new api service: Deps.Subscriptions is nil")
	case deps.Logger == nil:
		return nil, errors.New("new api service: Deps.Logger is nil")
	}
	if deps.Meter == nil {
		deps.Meter = otel.GetMeterProvider().Meter("github.com/pds-platform/pds/dataplane/internal/api")
	}
	if deps.Tracer == nil {
		deps.Tracer = otel.GetTracerProvider().Tracer("github.com/pds-platform/pds/dataplane/internal/api")
	}
	if opts.TenantID == "" {
		opts.TenantID = tenancy.DefaultTenantID
	}
	if opts.ConfigWait <= 0 {
		opts.ConfigWait = 10 * time.Second
	}
	switch {
	case opts.CompressMinBytes == 0:
		opts.CompressMinBytes = defaultCompressMinBytes
	case opts.CompressMinBytes < 0:
		opts.CompressMinBytes = 0
	}
	if opts.WebSocketPingInterval <= 0 {
		opts.WebSocketPingInterval = 30 * time.Second
	}
	m, err := newMetrics(deps.Meter)
	if err != nil {
		return nil, err
	}
	_, keepsProperties := deps.Broker.(broker.PropertyKeeper)
	return &Service{
		broker:        deps.Broker,
		delivery:      deps.Delivery,
		config:        deps.Config,
		subscriptions: deps.Subscriptions,
		latest:        latest.New(deps.Broker, deps.Logger),
		ready:         deps.Ready,
		logger:        deps.Logger,
		tracer:        deps.Tracer,
		metrics:       m,
		tenantID:      opts.TenantID,
		opts:          opts,

		keepsProperties: keepsProperties,
		json:            newJSONEncoder(),
		proto:           newProtoEncoder(deps.Delivery.EncodedEvent),
	}, nil
}

// Close stores the latest-view updates still in memory (bounded by ctx) and stops their writer. Call it
// after the HTTP server has drained and before the broker closes.
func (s *Service) Close(ctx context.Context) error {
	if err := s.latest.Close(ctx); err != nil {
		return fmt.Errorf("close api service: %w", err)
	}
	return nil
}

// Register mounts every endpoint on mux: the Connect service, the REST views and the WebSocket.
func (s *Service) Register(mux *http.ServeMux, handlerOpts ...connect.HandlerOption) {
	opts := append([]connect.HandlerOption{
		connect.WithCodec(newStreamCodec(s.json)),
		connect.WithCodec(streamProtoCodec{encoder: s.proto}),
		connect.WithReadMaxBytes(MaxRequestBytes),
		connect.WithCompressMinBytes(s.opts.CompressMinBytes),
	}, handlerOpts...)
	mux.Handle(pdsv1connect.NewPortfolioStreamHandler(s, opts...))
	mux.HandleFunc("GET /api/v1/portfolio/{portfolio_id}/state", s.serveLatest(latest.ViewState))
	mux.HandleFunc("GET /api/v1/portfolio/{portfolio_id}/performance", s.serveLatest(latest.ViewPerformance))
	mux.HandleFunc("GET /api/v1/ws", s.serveWebSocket)
}

// checkReady answers Unavailable while the node has not caught up with the replicated config.
func (s *Service) checkReady() error {
	if s.ready == nil {
		return nil
	}
	if ok, version, reason := s.ready(); !ok {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"this data-plane node is not ready (config version %d: %s); retry shortly or use another node", version, reason))
	}
	return nil
}
