package main

import (
	"bytes"
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
