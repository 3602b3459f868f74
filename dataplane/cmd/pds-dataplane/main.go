// Command pds-dataplane runs a data-plane node: it joins the control plane's replicated configuration as a
// raft non-voter and serves Publish, streams (Connect, gRPC, WebSocket) and the REST latest views.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/pds-platform/pds/common/telemetry"
	"github.com/pds-platform/pds/dataplane/internal/node"
)

func main() {
	logger := telemetry.NewLogger("pds-dataplane")
	var process processConfig
	cfg, err := parseConfig(os.Args[1:], os.Getenv, process.register(os.Getenv))
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if process.pprofAddr != "" {
		if err := servePprof(ctx, process.pprofAddr, logger); err != nil {
			logger.Error("bad configuration", "error", err)
			os.Exit(2)
		}
	}
	if err := node.Run(ctx, cfg, logger); err != nil {
		logger.Error("data plane stopped", "error", err)
		os.Exit(1)
	}
}
