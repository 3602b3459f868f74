// Command pds-demo-publisher publishes realistic portfolio events to a PDS data plane at a steady rate, so a
// local installation (make run) has traffic to stream, filter and query.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "pds-demo-publisher")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("demo publisher stopped", "error", err)
		os.Exit(1)
	}
}

type config struct {
	dataplaneURL string
	// rate is in events per second; at least 1.
	rate float64
	// portfolios is how many portfolios (portfolio_001 …) the events are about; at least 1.
	portfolios int
	// duration stops publishing after this long; zero runs until interrupted.
	duration time.Duration
	// logEvery is the interval between progress log lines.
	logEvery time.Duration
	// seed makes the generated values repeatable; zero seeds from the clock.
	seed uint64
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("pds-demo-publisher", flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.dataplaneURL, "dataplane-url", envOr("PDS_DATAPLANE_URL", "http://127.0.0.1:8081"),
		"base URL of the data plane's Connect API [PDS_DATAPLANE_URL]")
	fs.Float64Var(&cfg.rate, "rate", envFloat("PDS_DEMO_RATE", 20), "events per second [PDS_DEMO_RATE]")
	fs.IntVar(&cfg.portfolios, "portfolios", envInt("PDS_DEMO_PORTFOLIOS", 5), "number of portfolios [PDS_DEMO_PORTFOLIOS]")
	fs.DurationVar(&cfg.duration, "duration", 0, "stop after this long; 0 runs until interrupted")
	fs.DurationVar(&cfg.logEvery, "log-every", 5*time.Second, "interval between progress log lines")
	fs.Uint64Var(&cfg.seed, "seed", 0, "random seed for repeatable values; 0 seeds from the clock")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case cfg.rate < 1 || cfg.rate > 100_000:
		return config{}, fmt.Errorf("--rate must be between 1 and 100000 events/s, got %v", cfg.rate)
	case cfg.portfolios < 1 || cfg.portfolios > 999:
		return config{}, fmt.Errorf("--portfolios must be between 1 and 999, got %d", cfg.portfolios)
	case cfg.logEvery <= 0:
		return config{}, fmt.Errorf("--log-every must be positive, got %v", cfg.logEvery)
	case cfg.duration < 0:
		return config{}, fmt.Errorf("--duration must not be negative, got %v", cfg.duration)
	}
	return cfg, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func envFloat(name string, fallback float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return fallback
}

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}
