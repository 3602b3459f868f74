// Package app assembles the control plane: migrations, the command store, the raft voter with its outbox
// applier, and the HTTP server carrying the Connect admin API, health and metrics.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/health"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/telemetry"
	"github.com/pds-platform/pds/controlplane/internal/admin"
	"github.com/pds-platform/pds/controlplane/internal/cluster"
	"github.com/pds-platform/pds/controlplane/internal/replication"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"github.com/pds-platform/pds/db"
)

// readHeaderTimeout limits slow clients; there is deliberately no WriteTimeout, which would cut long
// requests such as an admin write waiting for replication.
const readHeaderTimeout = 10 * time.Second

// App is a started control plane.
type App struct {
	cfg       Config
	logger    *slog.Logger
	telemetry *telemetry.Provider
	store     *store.Store
	repl      *replication.Replicator
	server    *http.Server
	listener  net.Listener
}

// Run starts the control plane and serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	a, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return a.Serve(ctx)
}

// Start applies migrations, opens the store and the raft voter, and binds the HTTP listener. On error
// everything already opened is closed.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			a.close(context.Background())
		}
	}()
	if a.telemetry, err = telemetry.Setup(ctx, "pds-controlplane"); err != nil {
		return nil, err
	}
	if err = db.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	if a.store, err = store.Open(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	fsm := configfsm.New(nil) // the control plane validates filters in the admin API and never evaluates them
	if a.repl, err = replication.Start(context.WithoutCancel(ctx), replication.Deps{Outbox: a.store, FSM: fsm, Logger: logger, Meter: a.telemetry.Meter},
		replication.Options{
			NodeID: cfg.NodeID, BindAddr: cfg.RaftAddr, AdvertiseAddr: cfg.RaftAdvertiseAddr,
			Dir: filepath.Join(cfg.DataDir, "raft"),
		}); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	handler, err := a.routes(fsm)
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	if a.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("start control plane: listen on %s: %w", cfg.HTTPAddr, err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c, so gRPC clients work without TLS
	a.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return a, nil
}

func (a *App) routes(fsm *configfsm.FSM) (http.Handler, error) {
	codec := connect.WithCodec(jsoncodec.Codec())
	deps := admin.Deps{Store: a.store, Waiter: a.repl, Logger: a.logger}
	clusterSvc, err := cluster.NewService(cluster.Deps{Node: a.repl.Node(), Config: fsm.Current, TopicStatus: a.store, Logger: a.logger})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewTopicServiceHandler(admin.NewTopicService(deps), codec))
	mux.Handle(pdsv1connect.NewSubscriptionServiceHandler(admin.NewSubscriptionService(deps), codec))
	mux.Handle(pdsv1connect.NewClusterServiceHandler(clusterSvc, codec))
	health.Register(mux, a.repl.Ready)
	mux.Handle("GET /metrics", a.telemetry.MetricsHandler())
	return mux, nil
}

// HTTPAddr is the bound HTTP address (useful when the configured port was 0).
func (a *App) HTTPAddr() string { return a.listener.Addr().String() }

// RaftAddr is the raft transport's advertised address.
func (a *App) RaftAddr() string { return string(a.repl.Node().Addr()) }

// Serve serves HTTP until ctx ends, then stops accepting requests, lets in-flight ones finish within
// ShutdownTimeout, and closes raft, the store and telemetry.
func (a *App) Serve(ctx context.Context) error {
	a.logger.Info("control plane serving", "http_addr", a.HTTPAddr(), "raft_addr", a.RaftAddr(), "node_id", a.cfg.NodeID)
	served := make(chan error, 1)
	go func() { served <- a.server.Serve(a.listener) }()
	var serveErr error
	select {
	case <-ctx.Done():
		a.logger.Info("control plane shutting down")
	case serveErr = <-served:
		serveErr = fmt.Errorf("serve http: %w", serveErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.server.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		serveErr = errors.Join(serveErr, fmt.Errorf("shut down http: %w", err))
	}
	return errors.Join(serveErr, a.close(shutdownCtx))
}

func (a *App) close(ctx context.Context) error {
	var errs []error
	if a.repl != nil {
		errs = append(errs, a.repl.Close())
	}
	if a.store != nil {
		a.store.Close()
	}
	if a.telemetry != nil {
		errs = append(errs, a.telemetry.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
