package filter_test

import (
	"fmt"
	"testing"

	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// BenchmarkMatch evaluates each kind of filter against an event it lets through and one it rejects. The
// rejecting event fails the last check of its case, so the no-match numbers are the worst case.
func BenchmarkMatch(b *testing.B) {
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("portfolio_%03d", i)
	}
	cheap := &pdsv1.SubscriptionFilters{
		PortfolioIds:       ids,
		DataTypes:          []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE},
		RoutingKeyPatterns: []string{"*.cash.update", "portfolio_*.state.**"},
		MinPriority:        1,
	}
	const celExpr = `event.data.total_value > 500000.0 && "reporting_analytics" in event.routing.target_workflows`
	withCEL := &pdsv1.SubscriptionFilters{
		PortfolioIds:       cheap.PortfolioIds,
		DataTypes:          cheap.DataTypes,
		RoutingKeyPatterns: cheap.RoutingKeyPatterns,
		MinPriority:        cheap.MinPriority,
		Cel:                celExpr,
	}
	celOnly := &pdsv1.SubscriptionFilters{Cel: celExpr}
	dataTypeOnly := &pdsv1.SubscriptionFilters{DataTypes: cheap.DataTypes}

	small := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.state.update", 5, 1000)
	otherKey := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.other.update", 5, 1_000_000)
	cash := event("portfolio_001", pdsv1.PortfolioDataType_CASH_MANAGEMENT, "portfolio_001.cash.update", 5, 1_000_000)
	benchmarks := []struct {
		name    string
		filters *pdsv1.SubscriptionFilters
		event   *pdsv1.PortfolioDistribution
		want    bool
	}{
		{name: "no filters", filters: nil, event: stateEvent, want: true},
		{name: "data type/match", filters: dataTypeOnly, event: stateEvent, want: true},
		{name: "data type/no match", filters: dataTypeOnly, event: cash, want: false},
		{name: "ids, types, patterns, priority/match", filters: cheap, event: stateEvent, want: true},
		{name: "ids, types, patterns, priority/no match", filters: cheap, event: otherKey, want: false},
		{name: "all filters with CEL/match", filters: withCEL, event: stateEvent, want: true},
		{name: "all filters with CEL/no match", filters: withCEL, event: small, want: false},
		{name: "CEL only/match", filters: celOnly, event: stateEvent, want: true},
		{name: "CEL only/no match", filters: celOnly, event: small, want: false},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			f, err := filter.Compile(bm.filters)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if f.Match(bm.event) != bm.want {
					b.Fatalf("Match = %v, want %v", !bm.want, bm.want)
				}
			}
		})
	}
}
