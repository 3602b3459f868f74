package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// run carries out every system × rate of cfg in order, appends each result to cfg.out as it comes, and writes
// the table of all results to stdout. A run that could not be carried out is reported and the others go on;
// the error then names every failed run.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	if cfg.summary != "" {
		return summarize(cfg.summary, stdout)
	}
	if cfg.saturatedCheck != "" {
		return judgeLast(cfg.saturatedCheck, stdout)
	}
	if cfg.fsyncProbeDir != "" {
		latency, err := loadgen.ProbeFsync(cfg.fsyncProbeDir, 1000, 2*time.Millisecond)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "fsync of an 8 KiB append: %v\n", latency)
		return err
	}
	var results []loadgen.Result
	var failed []error
	for _, kind := range cfg.systems {
		var previous *loadgen.Result // this system's run at the rate before
		for i, rate := range cfg.rates {
			if ctx.Err() != nil {
				break
			}
			if saturated, why := previous.Saturated(); saturated && cfg.stopWhenSaturated {
				fmt.Fprintf(stderr, "pds-load: %s did not keep up at %.0f events/s (%s): skipping %s (--stop-when-saturated=false runs them)\n",
					kind, cfg.rates[i-1], why, formatRates(cfg.rates[i:]))
				break
			}
			previous = nil
			res, err := runOne(ctx, cfg, kind, rate, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "pds-load: %s at %.0f events/s: %v\n", kind, rate, err)
				failed = append(failed, fmt.Errorf("%s at %.0f events/s: %w", kind, rate, err))
				if res.System == "" {
					continue
				}
			}
			results = append(results, res)
			previous = &res
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

func formatRates(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = fmt.Sprintf("%.0f", r)
	}
	return strings.Join(parts, ", ") + " events/s"
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
	results, err := readResults(path)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	return loadgen.WriteTable(stdout, results)
}

// judgeLast prints whether the last run in path kept up ("kept up") or not ("saturated: why"), for scripts
// that sweep rates one run at a time.
func judgeLast(path string, stdout io.Writer) error {
	results, err := readResults(path)
	if err != nil {
		return fmt.Errorf("saturated: %w", err)
	}
	if len(results) == 0 {
		return fmt.Errorf("saturated: %s holds no results", path)
	}
	if saturated, why := results[len(results)-1].Saturated(); saturated {
		_, err = fmt.Fprintf(stdout, "saturated: %s\n", why)
		return err
	}
	_, err = fmt.Fprintln(stdout, "kept up")
	return err
}

func readResults(path string) ([]loadgen.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		results = append(results, res)
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	return results, nil
}
