// Command pds-load drives benchmark load through PDS or a baseline system and reports what arrived:
// open-loop publishing at fixed rates, publish→receive latency from each event's intended send time, throughput,
// CPU time per delivered event and peak memory of every process, and duplicates and loss. See README.md,
// "Benchmarks", and deploy/scripts/bench.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pds-load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = profiled(cfg.cpuProfile, func() error { return run(ctx, cfg, os.Stdout, os.Stderr) })
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pds-load:", err)
		os.Exit(1)
	}
}

// profiled runs f, with a CPU profile written to path when path is not empty.
func profiled(path string, f func() error) error {
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	runErr := f()
	pprof.StopCPUProfile()
	return errors.Join(runErr, out.Close())
}
