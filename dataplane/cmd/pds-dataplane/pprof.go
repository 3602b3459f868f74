package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// processConfig holds pds-dataplane's flags that configure the process rather than the node.
type processConfig struct {
	// pprofAddr is the host:port of the Go profiling endpoints (/debug/pprof/); empty (the default) serves none.
	pprofAddr string
}

// register adds the process flags to fs, with defaults from getenv.
func (p *processConfig) register(getenv func(string) string) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.StringVar(&p.pprofAddr, "pprof-addr", getenv("PDS_PPROF_ADDR"),
			"host:port serving Go profiles at /debug/pprof/ on a listener of its own (benchmarks); empty serves none [PDS_PPROF_ADDR]")
	}
}

// servePprof serves net/http/pprof on addr, apart from the node's listener so profiles are never exposed on
// the API port, until ctx ends. It returns once the listener is bound.
func servePprof(ctx context.Context, addr string, logger *slog.Logger) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: a CPU profile or trace streams for as long as it was asked to run.
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server stopped", "error", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = server.Close() })
	logger.Info("serving Go profiles", "addr", listener.Addr().String())
	return nil
}
