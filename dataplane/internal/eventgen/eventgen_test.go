package eventgen

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

func fixedNow() time.Time { return time.Date(2025, 6, 21, 10, 0, 0, 0, time.UTC) }

// The events must pass PDS's own validation and, once PDS filled in its defaults, be 300–500 bytes as
// stored, like the realistic events the README promises.
func TestGeneratedEventsAreValidAndRealisticallySized(t *testing.T) {
	t.Parallel()
	const portfolios = 5
	g := New(Options{Portfolios: portfolios, Seed: 42, Now: fixedNow})
	seen := map[pdsv1.PortfolioDataType]int{}
	for i := range portfolios * len(DataTypes) * 4 {
		ev := g.Next()
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
	for _, dt := range DataTypes {
		if seen[dt] == 0 {
			t.Errorf("no %v event among %d generated", dt, portfolios*len(DataTypes)*4)
		}
	}
}

// Every portfolio gets every data type in turn, so each portfolio soon has both a state and a performance view.
func TestEveryPortfolioCyclesThroughAllDataTypes(t *testing.T) {
	t.Parallel()
	const portfolios = 3
	g := New(Options{Portfolios: portfolios, Seed: 7, Now: fixedNow})
	types := map[string]map[pdsv1.PortfolioDataType]bool{}
	for range portfolios * len(DataTypes) {
		ev := g.Next()
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
		if len(got) != len(DataTypes) {
			t.Errorf("portfolio %s got %d of %d data types after one full cycle", id, len(got), len(DataTypes))
		}
	}
}

// A generator limited to some data types (one topic's) makes only those.
func TestDataTypesOptionLimitsTheEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		types []pdsv1.PortfolioDataType
	}{
		{"one type", []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_RISK_BUDGET}},
		{"two types", []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE, pdsv1.PortfolioDataType_CASH_MANAGEMENT}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := New(Options{Portfolios: 4, Seed: 1, Now: fixedNow, DataTypes: tt.types})
			seen := map[pdsv1.PortfolioDataType]bool{}
			for range 100 {
				seen[g.Next().GetDataType()] = true
			}
			if len(seen) != len(tt.types) {
				t.Fatalf("saw data types %v, want exactly %v", seen, tt.types)
			}
			for _, dt := range tt.types {
				if !seen[dt] {
					t.Errorf("no %v event among 100", dt)
				}
			}
		})
	}
}

// The total value walks randomly but stays a plausible positive amount over a long run.
func TestTotalValueRandomWalkStaysPlausible(t *testing.T) {
	t.Parallel()
	g := New(Options{Portfolios: 1, Seed: 3, Now: fixedNow})
	first := g.Next().GetData().GetTotalValue()
	changed := false
	for range 10_000 {
		v := g.Next().GetData().GetTotalValue()
		if v <= 0 || v < first/10 || v > first*10 {
			t.Fatalf("total value drifted to %.2f from %.2f", v, first)
		}
		changed = changed || v != first
	}
	if !changed {
		t.Fatalf("total value never moved from %.2f", first)
	}
}
