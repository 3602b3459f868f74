package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

func fixedNow() time.Time { return time.Date(2025, 6, 21, 10, 0, 0, 0, time.UTC) }

// The demo's events must pass PDS's own validation and, once PDS filled in its defaults, be 300–500 bytes as
// stored, like the realistic events the README promises.
func TestGeneratedEventsAreValidAndRealisticallySized(t *testing.T) {
	t.Parallel()
	const portfolios = 5
	g := newGenerator(portfolios, 42, fixedNow)
	seen := map[pdsv1.PortfolioDataType]int{}
	for i := range portfolios * len(dataTypes) * 4 {
		ev := g.next()
		if err := routing.Normalize(ev, "event", fixedNow()); err != nil {
			t.Fatalf("event %d (%v) fails PDS validation: %v", i, ev.GetDataType(), err)
		}
		size := proto.Size(ev)
		if size < 300 || size > 500 {
			t.Errorf("event %d (%v) is %d bytes as stored, want 300–500", i, ev.GetDataType(), size)
		}
		if ev.GetData().GetDetails() == nil {
			t.Errorf("event %d (%v) has no typed details", i, ev.GetDataType())
		}
		seen[ev.GetDataType()]++
	}
	for _, dt := range dataTypes {
		if seen[dt] == 0 {
			t.Errorf("no %v event among %d generated", dt, portfolios*len(dataTypes)*4)
		}
	}
}

// Every portfolio gets every data type in turn, so each portfolio soon has both a state and a performance view.
func TestEveryPortfolioCyclesThroughAllDataTypes(t *testing.T) {
	t.Parallel()
	const portfolios = 3
	g := newGenerator(portfolios, 7, fixedNow)
	types := map[string]map[pdsv1.PortfolioDataType]bool{}
	for range portfolios * len(dataTypes) {
		ev := g.next()
		id := ev.GetData().GetPortfolioId()
		if types[id] == nil {
			types[id] = map[pdsv1.PortfolioDataType]bool{}
		}
		types[id][ev.GetDataType()] = true
	}
	if len(types) != portfolios {
		t.Fatalf("events cover %d portfolios, want %d", len(types), portfolios)
	}
	for id, got := range types {
		if len(got) != len(dataTypes) {
			t.Errorf("portfolio %s got %d of %d data types after one full cycle", id, len(got), len(dataTypes))
		}
	}
}

// The total value walks randomly but stays a plausible positive amount over a long run.
func TestTotalValueRandomWalkStaysPlausible(t *testing.T) {
	t.Parallel()
	g := newGenerator(1, 3, fixedNow)
	first := g.next().GetData().GetTotalValue()
	changed := false
	for range 10_000 {
		v := g.next().GetData().GetTotalValue()
		if v <= 0 || v < first/10 || v > first*10 {
			t.Fatalf("total value drifted to %.2f from %.2f", v, first)
		}
		changed = changed || v != first
	}
	if !changed {
		t.Fatalf("total value never moved from %.2f", first)
	}
}

func TestParseFlagsRejectsOutOfRangeValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"zero rate", []string{"--rate", "0"}},
		{"too many portfolios", []string{"--portfolios", "1000"}},
		{"no portfolios", []string{"--portfolios", "0"}},
		{"negative duration", []string{"--duration", "-1s"}},
		{"zero log interval", []string{"--log-every", "0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := parseFlags(tt.args); err == nil {
				t.Fatalf("parseFlags(%q) accepted an out-of-range value", tt.args)
			}
		})
	}
}
