package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Results appended with --out come back as a table with --summary, one row per run and per group.
func TestOutFileSummarizesAsTable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "results.jsonl")
	results := []loadgen.Result{
		{System: "pds-embedded", Scenario: "route", OfferedRate: 10000, Expected: 300000, Delivered: 300000},
		{System: "pds-pulsar", Scenario: "slow", OfferedRate: 50000, Expected: 1650000, Delivered: 1640000, Backlog: 10000,
			Groups: []loadgen.GroupResult{
				{Name: "fast", Expected: 1500000, Delivered: 1500000},
				{Name: "slow", Expected: 150000, Delivered: 140000, Backlog: 10000},
			}},
	}
	for _, r := range results {
		if err := appendJSON(path, r); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	var out bytes.Buffer
	if err := summarize(path, &out); err != nil {
		t.Fatalf("summarize: %v", err)
	}
	table := out.String()
	for _, want := range []string{"pds-embedded", "route", "pds-pulsar", "slow/fast", "slow/slow", "1650000", "10000"} {
		if !strings.Contains(table, want) {
			t.Errorf("summary lacks %q:\n%s", want, table)
		}
	}
	if rows := strings.Count(strings.TrimSpace(table), "\n") + 1; rows != 5 {
		t.Errorf("summary has %d lines, want a header and 4 rows:\n%s", rows, table)
	}
}

// A sweep stops at the first rate the system does not keep up with: the engine alone cannot publish
// 300K events/s here, so the higher rate is skipped and said so. With --stop-when-saturated=false it runs.
func TestSweepStopsAfterASaturatedRate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded engine in process")
	}
	t.Parallel()
	for _, stop := range []bool{true, false} {
		args := []string{"--system", "engine", "--scenario", "smoke", "--rates", "300000,600000", "--duration", "100ms",
			"--drain-timeout", "10s", "--progress-interval", "1h", "--engine-data-dir", t.TempDir()}
		if !stop {
			args = append(args, "--stop-when-saturated=false")
		}
		var stderr bytes.Buffer
		cfg, err := parseFlags(args, &stderr)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		var stdout bytes.Buffer
		if err := run(context.Background(), cfg, &stdout, &stderr); err != nil {
			t.Fatalf("run: %v\n%s", err, stderr.String())
		}
		skipped := strings.Contains(stderr.String(), "skipping 600000 events/s")
		ran := strings.Contains(stdout.String(), "600000")
		if skipped != stop || ran == stop {
			t.Errorf("--stop-when-saturated=%v: skipped %v, ran %v\nstderr:\n%s\nstdout:\n%s", stop, skipped, ran, stderr.String(), stdout.String())
		}
	}
}

// --saturated judges the last run of a results file, for bench.sh's one-rate-at-a-time sweep.
func TestSaturatedJudgesTheLastRun(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "results.jsonl")
	keptUp := loadgen.Result{System: "pds-embedded", OfferedRate: 10000, AchievedPublishRate: 10000, Complete: true}
	behind := loadgen.Result{System: "pds-embedded", OfferedRate: 50000, AchievedPublishRate: 20000, Complete: true}
	for _, step := range []struct {
		append loadgen.Result
		want   string
	}{
		{keptUp, "kept up\n"},
		{behind, "saturated: published 20000 of 50000 events/s\n"},
		{keptUp, "kept up\n"},
	} {
		if err := appendJSON(path, step.append); err != nil {
			t.Fatalf("append: %v", err)
		}
		var out bytes.Buffer
		if err := run(context.Background(), config{saturatedCheck: path}, &out, &out); err != nil {
			t.Fatalf("--saturated: %v", err)
		}
		if out.String() != step.want {
			t.Errorf("after a run at %.0f events/s: got %q, want %q", step.append.OfferedRate, out.String(), step.want)
		}
	}
}

// --fsync-probe measures the directory's disk and prints one line, without running any system.
func TestFsyncProbePrintsTheDisksLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 1,000 fsyncs")
	}
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), config{fsyncProbeDir: t.TempDir()}, &out, &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := out.String(); !strings.HasPrefix(got, "fsync of an 8 KiB append: p50 ") || !strings.Contains(got, "(1000 samples)") {
		t.Errorf("output %q; want one line of percentiles over 1000 samples", got)
	}
}
