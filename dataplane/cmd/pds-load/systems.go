package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/centrifugo"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/engine"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pdssys"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarraw"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarws"
)

// newSystem builds the system kind (a value of --system) from the command line.
func newSystem(kind string, cfg config) (loadgen.System, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch kind {
	case "pds":
		return pdssys.New(pdssys.Options{
			Name:                 cfg.name,
			ControlPlaneURL:      cfg.controlPlaneURL,
			DataPlaneURL:         cfg.dataPlaneURL,
			Processes:            cfg.processes(),
			StreamsPerConnection: cfg.pdsStreamsPerConn,
			MaxInFlight:          cfg.pdsMaxInFlight,
			AckInterval:          cfg.pdsAckInterval,
			FullDecode:           cfg.pdsFullDecode,
			Logger:               logger,
		}), nil

	case "engine":
		return engine.New(engine.Options{DataDir: cfg.engineDataDir, Logger: logger}), nil
	case "pulsar-raw":
		return pulsarraw.New(pulsarraw.Options{ServiceURL: cfg.pulsarURL, AdminURL: cfg.pulsarAdminURL,
			Processes: cfg.processes(), Logger: logger}), nil
	case "pulsar-ws":
		return pulsarws.New(pulsarws.Options{ServiceURL: cfg.pulsarURL, AdminURL: cfg.pulsarAdminURL,
			Processes: cfg.processes()}), nil
	case "centrifugo":
		return centrifugo.New(centrifugo.Options{APIURL: cfg.centrifugoAPIURL, APIKey: cfg.centrifugoAPIKey,
			WebSocketURL: cfg.centrifugoWSURL, Pid: cfg.pids["centrifugo"], Logger: logger}), nil
	}
	return nil, fmt.Errorf("unknown system %q", kind)
}
