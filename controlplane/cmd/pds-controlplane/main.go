// Command pds-controlplane runs PDS's control plane: the admin API, the command store and the raft voter
// that replicates configuration to data-plane nodes.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/pds-platform/pds/common/telemetry"
	"github.com/pds-platform/pds/controlplane/internal/app"
)

func main() {
	logger := telemetry.NewLogger("pds-controlplane")
	cfg, err := app.ParseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("invalid configuration", "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, logger); err != nil {
		logger.Error("control plane stopped with an error", "error", err)
		os.Exit(1)
	}
}
