package filter_test

import (
	"fmt"
	"testing"

	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

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
	withCEL := &pdsv1.SubscriptionFilters{
		PortfolioIds:       cheap.PortfolioIds,
		DataTypes:          cheap.DataTypes,
		RoutingKeyPatterns: cheap.RoutingKeyPatterns,
		MinPriority:        cheap.MinPriority,
		Cel:                `event.data.total_value > 500000.0 && "reporting_analytics" in event.routing.target_workflows`,
	}
	celOnly := &pdsv1.SubscriptionFilters{Cel: withCEL.Cel}
	benchmarks := []struct {
		name    string
		filters *pdsv1.SubscriptionFilters
	}{
		{name: "no filters", filters: nil},
		{name: "ids, types, patterns, priority", filters: cheap},
		{name: "all filters with CEL", filters: withCEL},
		{name: "CEL only", filters: celOnly},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			f, err := filter.Compile(bm.filters)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if !f.Match(stateEvent) {
					b.Fatal("benchmark event must match")
				}
			}
		})
	}
}
