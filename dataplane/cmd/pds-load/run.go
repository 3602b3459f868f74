package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// run carries out every system × rate of cfg in order, appends each result to cfg.out as it comes, and writes
// the table of all results to stdout. A run that could not be carried out is reported and the others go on;
// the error then names every failed run.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	if cfg.summary != "" {
		return summarize(cfg.summary, stdout)
	}
	var results []loadgen.Result
	var failed []error
	for _, kind := range cfg.systems {
		for _, rate := range cfg.rates {
			if ctx.Err() != nil {
				break
			}
			res, err := runOne(ctx, cfg, kind, rate, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "pds-load: %s at %.0f events/s: %v\n", kind, rate, err)
				failed = append(failed, fmt.Errorf("%s at %.0f events/s: %w", kind, rate, err))
				if res.System == "" {
					continue
				}
			}
			results = append(results, res)
			if err := appendJSON(cfg.out, res); err != nil {
				return err
			}
			if err := loadgen.WriteTable(stderr, []loadgen.Result{res}); err != nil {
				return err
			}
		}
	}
	if len(results) > 0 {
		if err := loadgen.WriteTable(stdout, results); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		failed = append(failed, ctx.Err())
	}
	return errors.Join(failed...)
}

func runOne(ctx context.Context, cfg config, kind string, rate float64, stderr io.Writer) (loadgen.Result, error) {
	sys, err := newSystem(kind, cfg)
	if err != nil {
		return loadgen.Result{}, err
	}
	return loadgen.Run(ctx, loadgen.RunConfig{
		System:           sys,
		Scenario:         cfg.scenario,
		Rate:             rate,
		Duration:         cfg.duration,
		Warmup:           cfg.warmup,
		DrainTimeout:     cfg.drainTimeout,
		Publishers:       cfg.publishers,
		MaxBatch:         cfg.batch,
		Linger:           cfg.linger,
		Progress:         stderr,
		ProgressInterval: cfg.progress,
	})
}

// appendJSON appends res to path as one JSON line; an empty path writes nothing.
func appendJSON(path string, res loadgen.Result) error {
	if path == "" {
		return nil
	}
	line, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open --out file: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write --out file: %w", err)
	}
	return f.Close()
}

// summarize prints the table of the results in path, a file of JSON lines as --out writes them.
func summarize(path string, stdout io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	defer f.Close()
	var results []loadgen.Result
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for line := 1; scanner.Scan(); line++ {
		if len(scanner.Bytes()) == 0 {
			continue
		}
		var res loadgen.Result
		if err := json.Unmarshal(scanner.Bytes(), &res); err != nil {
			return fmt.Errorf("summary: %s line %d: %w", path, line, err)
		}
		results = append(results, res)
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	return loadgen.WriteTable(stdout, results)
}
