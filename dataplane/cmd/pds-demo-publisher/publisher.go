package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/dataplane/internal/eventgen"
)

// tick is how often the publisher sends what is due; at 20 events/s that is a batch of 2.
const tick = 100 * time.Millisecond

// maxBatch is the most events one Publish carries (the API's limit).
const maxBatch = 1000

type progress struct {
	published, failedEvents, failedCalls int64
}

// run publishes at cfg.rate until ctx ends or cfg.duration passes. A failed Publish is logged and its events
// dropped: the demo keeps a steady pace rather than catching up after an outage.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	client := pdsv1connect.NewPortfolioStreamClient(http.DefaultClient, cfg.dataplaneURL)
	gen := eventgen.New(eventgen.Options{Portfolios: cfg.portfolios, Seed: cfg.seed})
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	logger.Info("publishing", "dataplane_url", cfg.dataplaneURL, "rate", cfg.rate, "portfolios", cfg.portfolios)

	start := time.Now()
	var total, sinceLog progress
	lastLog := start
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopped", "published", total.published, "failed_events", total.failedEvents)
			if ctx.Err() == context.DeadlineExceeded {
				return nil
			}
			return ctx.Err()
		case now := <-ticker.C:
			due := int64(cfg.rate*now.Sub(start).Seconds()) - total.published - total.failedEvents
			for due > 0 {
				n := min(due, maxBatch)
				due -= n
				events := make([]*pdsv1.PortfolioDistribution, n)
				for i := range events {
					events[i] = gen.Next()
				}
				_, err := client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events}))
				if err != nil {
					if ctx.Err() != nil {
						continue
					}
					total.failedEvents += n
					total.failedCalls++
					sinceLog.failedEvents += n
					sinceLog.failedCalls++
					logger.Warn("publish failed", "events", n, "error", err)
					continue
				}
				total.published += n
				sinceLog.published += n
			}
			if elapsed := now.Sub(lastLog); elapsed >= cfg.logEvery {
				logger.Info("progress",
					"published_total", total.published,
					"failed_total", total.failedEvents,
					"events_per_second", fmt.Sprintf("%.1f", float64(sinceLog.published)/elapsed.Seconds()),
					"failed_calls", sinceLog.failedCalls)
				sinceLog = progress{}
				lastLog = now
			}
		}
	}
}
