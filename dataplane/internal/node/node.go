// Package node assembles a data-plane node: broker, raft follower, delivery engine, APIs, health and
// metrics on one HTTP listener, and shuts them down in order.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/health"
	"github.com/pds-platform/pds/common/telemetry"
	"github.com/pds-platform/pds/dataplane/internal/api"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"github.com/pds-platform/pds/dataplane/internal/follower"
)

// Config is a data-plane node's configuration (flags and environment of pds-dataplane).
type Config struct {
	// HTTPAddr serves Connect (h2c, so gRPC works), REST, WebSocket, /healthz, /readyz and /metrics.
	HTTPAddr string
	// RaftAddr is the raft transport's host:port; the control plane dials it.
	RaftAddr string
	// NodeID is the node's stable raft id.
	NodeID string
	// ControlPlaneURL is the control plane's HTTP base URL (ClusterService, SubscriptionService).
	ControlPlaneURL string
	// Broker names the broker driver: "embedded" (in-process, the default when empty) or "pulsar".
	Broker string
	// DataDir holds the embedded broker's files (under DataDir/broker).
	DataDir string
	// Pulsar configures the "pulsar" driver: ServiceURL, AdminURL, AuthToken and TLS settings. Unused by
	// the embedded driver.
	Pulsar PulsarConfig
	// AckDeadline: an event not acknowledged within it is delivered again. Zero means 30s.
	AckDeadline time.Duration
	// MaxInFlight is the unacknowledged-event bound of a stream that asks for 0. Zero means 1000.
	MaxInFlight int
	// ShutdownTimeout bounds the graceful shutdown. Zero means 30s.
	ShutdownTimeout time.Duration
}

// PulsarConfig is how a node reaches an existing Pulsar cluster.
type PulsarConfig struct {
	// ServiceURL is the binary protocol URL (pulsar:// or pulsar+ssl://).
	ServiceURL string
	// AdminURL is the web service URL (http:// or https://) of the admin API.
	AdminURL string
	// AuthToken is a JWT for token authentication. Empty means no authentication.
	AuthToken string
	// TLSTrustCertsFile is a PEM file of trusted CAs. Empty means the system roots.
	TLSTrustCertsFile string
	// TLSAllowInsecure accepts any server certificate (development only).
	TLSAllowInsecure bool
}

// Timeouts of the HTTP side. There is deliberately no WriteTimeout: it would cut long-lived streams.
const (
	readHeaderTimeout   = 10 * time.Second
	idleTimeout         = 2 * time.Minute
	controlPlaneTimeout = 30 * time.Second
)

// Run serves until ctx ends, then shuts down gracefully: it stops accepting requests, ends the streams
// (clients reconnect, unacknowledged events are delivered again), lets unary calls finish, leaves the
// raft cluster and closes the broker.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	tel, err := telemetry.Setup(ctx, "pds-dataplane")
	if err != nil {
		return err
	}
	// Shutdown steps run on a fresh context: ctx has ended by then.
	shutdownCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	}
	defer func() {
		sctx, cancel := shutdownCtx()
		defer cancel()
		err = errors.Join(err, tel.Shutdown(sctx))
	}()

	b, err := openBroker(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeLogged(logger, "broker", b.Close)) }()

	httpClient := &http.Client{Timeout: controlPlaneTimeout}
	fol, err := follower.Start(follower.Options{
		NodeID:       cfg.NodeID,
		RaftBindAddr: cfg.RaftAddr,
		Cluster:      pdsv1connect.NewClusterServiceClient(httpClient, cfg.ControlPlaneURL),
		Logger:       logger.With("component", "follower"),
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := shutdownCtx()
		defer cancel()
		err = errors.Join(err, fol.Close(sctx))
	}()

	// Broker sync (topic-status hook): carries the config out at the broker and reports each topic's
	// outcome to the control plane (Topic.broker_status).
	reporter, err := follower.NewClusterReporter(pdsv1connect.NewClusterServiceClient(httpClient, cfg.ControlPlaneURL), cfg.NodeID)
	if err != nil {
		return err
	}
	brokerSync, err := follower.NewBrokerSync(follower.BrokerSyncDeps{
		FSM: fol.FSM(), Broker: b, Reporter: reporter, Logger: logger.With("component", "broker-sync"),
	}, follower.BrokerSyncOptions{})
	if err != nil {
		return err
	}
	syncCtx, stopSync := context.WithCancel(context.WithoutCancel(ctx))
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		brokerSync.Run(syncCtx)
	}()
	defer func() { stopSync(); <-syncDone }()

	deliveries, err := delivery.NewService(delivery.Deps{
		Broker: b,
		Config: fol.FSM().Current,
		Logger: logger.With("component", "delivery"),
	}, delivery.Options{AckDeadline: cfg.AckDeadline, DefaultMaxInFlight: cfg.MaxInFlight})
	if err != nil {
		return fmt.Errorf("start delivery: %w", err)
	}
	defer func() { err = errors.Join(err, closeLogged(logger, "delivery", deliveries.Close)) }()

	service, err := api.New(api.Deps{
		Broker:        b,
		Delivery:      deliveries,
		Config:        fol.FSM(),
		Subscriptions: pdsv1connect.NewSubscriptionServiceClient(httpClient, cfg.ControlPlaneURL),
		Logger:        logger.With("component", "api"),
		Ready:         fol.Ready,
		Meter:         tel.Meter,
		Tracer:        tel.Tracer,
	}, api.Options{})
	if err != nil {
		return fmt.Errorf("start api: %w", err)
	}
	defer func() {
		sctx, cancel := shutdownCtx()
		defer cancel()
		err = errors.Join(err, service.Close(sctx))
	}()
	mux := http.NewServeMux()
	service.Register(mux)
	health.Register(mux, fol.Ready)
	mux.Handle("GET /metrics", tel.MetricsHandler())

	return serve(ctx, cfg, mux, deliveries, logger)
}

// serve runs the HTTP server until ctx ends, then drains it.
func serve(ctx context.Context, cfg Config, mux *http.ServeMux, deliveries *delivery.Service, logger *slog.Logger) error {
	listener, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	requestsCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return requestsCtx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(listener) }()
	logger.Info("data plane serving", "http_addr", listener.Addr().String(), "raft_addr", cfg.RaftAddr, "node_id", cfg.NodeID)

	select {
	case err := <-served:
		return fmt.Errorf("serve http on %s: %w", cfg.HTTPAddr, err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- srv.Shutdown(shutdownCtx) }()
	// Streams never go idle by themselves: closing the sessions ends them (clients reconnect elsewhere)
	// while unary calls such as Publish finish normally.
	if err := deliveries.Close(); err != nil {
		logger.Warn("close delivery sessions", "error", err)
	}
	if err := <-drained; err != nil {
		cancelRequests()
		_ = srv.Close()
		return fmt.Errorf("drain http server: %w", err)
	}
	return nil
}

func openBroker(ctx context.Context, cfg Config, logger *slog.Logger) (broker.Broker, error) {
	switch cfg.Broker {
	case "embedded", "":
		b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{
			Dir:    filepath.Join(cfg.DataDir, "broker"),
			Logger: logger.With("component", "broker"),
		})
		if err != nil {
			return nil, fmt.Errorf("open embedded broker in %s: %w", cfg.DataDir, err)
		}
		return b, nil
	case "pulsar":
		b, err := broker.OpenPulsar(ctx, broker.PulsarOptions{
			ServiceURL:                 cfg.Pulsar.ServiceURL,
			AdminURL:                   cfg.Pulsar.AdminURL,
			AuthToken:                  cfg.Pulsar.AuthToken,
			TLSTrustCertsFile:          cfg.Pulsar.TLSTrustCertsFile,
			TLSAllowInsecureConnection: cfg.Pulsar.TLSAllowInsecure,
			Logger:                     logger.With("component", "broker"),
		})
		if err != nil {
			return nil, err // OpenPulsar names the broker, its URLs and what to check
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown broker %q: the supported drivers are \"embedded\" and \"pulsar\"", cfg.Broker)
	}
}

func closeLogged(logger *slog.Logger, what string, closeFn func() error) error {
	if err := closeFn(); err != nil {
		logger.Error("close "+what, "error", err)
		return fmt.Errorf("close %s: %w", what, err)
	}
	return nil
}
