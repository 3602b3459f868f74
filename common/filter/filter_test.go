package filter_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

func event(portfolioID string, dataType pdsv1.PortfolioDataType, routingKey string, priority int32, totalValue float64) *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		EventId:   "evt-1",
		Timestamp: "2025-06-21T10:00:00.000Z",
		DataType:  dataType,
		Data:      &pdsv1.PortfolioData{PortfolioId: portfolioID, TotalValue: totalValue},
		Routing: &pdsv1.RoutingInfo{
			Topic:           "portfolio/state/updated",
			RoutingKey:      routingKey,
			TargetWorkflows: []string{"reporting_analytics"},
			Priority:        priority,
		},
	}
}

var stateEvent = event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.state.update", 5, 1_000_000)

func mustCompile(t *testing.T, f *pdsv1.SubscriptionFilters) *filter.Filter {
	t.Helper()
	compiled, err := filter.Compile(f)
	if err != nil {
		t.Fatalf("Compile(%v): %v", f, err)
	}
	return compiled
}

func TestMatchEachFilterKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		filters *pdsv1.SubscriptionFilters
		event   *pdsv1.PortfolioDistribution
		want    bool
	}{
		{name: "nil filters match", filters: nil, event: stateEvent, want: true},
		{name: "empty filters match", filters: &pdsv1.SubscriptionFilters{}, event: stateEvent, want: true},
		{name: "portfolio id listed", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{"portfolio_009", "portfolio_001"}}, event: stateEvent, want: true},
		{name: "portfolio id not listed", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{"portfolio_009"}}, event: stateEvent, want: false},
		{name: "event without data fails a portfolio filter", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{"portfolio_001"}},
			event: &pdsv1.PortfolioDistribution{DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE}, want: false},
		{name: "data type listed", filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{
			pdsv1.PortfolioDataType_REBALANCING, pdsv1.PortfolioDataType_PORTFOLIO_STATE}}, event: stateEvent, want: true},
		{name: "data type not listed", filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{
			pdsv1.PortfolioDataType_CASH_MANAGEMENT}}, event: stateEvent, want: false},
		{name: "priority at the minimum", filters: &pdsv1.SubscriptionFilters{MinPriority: 5}, event: stateEvent, want: true},
		{name: "priority below the minimum", filters: &pdsv1.SubscriptionFilters{MinPriority: 6}, event: stateEvent, want: false},
		{name: "one of several patterns matches", filters: &pdsv1.SubscriptionFilters{
			RoutingKeyPatterns: []string{"*.cash.update", "portfolio_001.**"}}, event: stateEvent, want: true},
		{name: "no pattern matches", filters: &pdsv1.SubscriptionFilters{
			RoutingKeyPatterns: []string{"*.cash.update", "portfolio_002.**"}}, event: stateEvent, want: false},
		{name: "CEL true", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.total_value > 999999.0"}, event: stateEvent, want: true},
		{name: "CEL false", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.total_value > 1000000.0"}, event: stateEvent, want: false},
		{name: "CEL int literal compares with a double", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.total_value >= 1000000"}, event: stateEvent, want: true},
		{name: "CEL over routing and enums", filters: &pdsv1.SubscriptionFilters{
			Cel: `event.data_type == PortfolioDataType.PORTFOLIO_STATE && "reporting_analytics" in event.routing.target_workflows && event.routing.routing_key.startsWith("portfolio_001.")`},
			event: stateEvent, want: true},
		{name: "CEL enum by full name", filters: &pdsv1.SubscriptionFilters{
			Cel: "event.data_type == pds.v1.PortfolioDataType.PORTFOLIO_STATE"}, event: stateEvent, want: true},
		{name: "CEL has() on an unset details member", filters: &pdsv1.SubscriptionFilters{
			Cel: "has(event.data.rebalancing)"}, event: stateEvent, want: false},
		{name: "CEL runtime error is no match", filters: &pdsv1.SubscriptionFilters{
			Cel: "event.data.portfolio_state.positions[3].weight > 0.1"}, event: stateEvent, want: false},
		{name: "CEL division by zero is no match", filters: &pdsv1.SubscriptionFilters{
			Cel: "1 / (event.routing.priority - 5) == 0"}, event: stateEvent, want: false},
		{name: "every filter set and all match", filters: &pdsv1.SubscriptionFilters{
			PortfolioIds:       []string{"portfolio_001"},
			DataTypes:          []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE},
			RoutingKeyPatterns: []string{"*.state.*"},
			MinPriority:        1,
			Cel:                "event.data.total_value > 0.0",
		}, event: stateEvent, want: true},
		{name: "every filter set and only CEL fails", filters: &pdsv1.SubscriptionFilters{
			PortfolioIds:       []string{"portfolio_001"},
			DataTypes:          []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE},
			RoutingKeyPatterns: []string{"*.state.*"},
			MinPriority:        1,
			Cel:                "event.data.total_value < 0.0",
		}, event: stateEvent, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := mustCompile(t, tt.filters).Match(tt.event); got != tt.want {
				t.Errorf("filters %v on event %v: Match = %v, want %v", tt.filters, tt.event, got, tt.want)
			}
		})
	}
}

func TestRoutingKeyPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		key     string
		want    bool
	}{
		{"portfolio_001.state.update", "portfolio_001.state.update", true},
		{"portfolio_001.state.update", "portfolio_001.state.updated", false},
		{"*.state.update", "portfolio_001.state.update", true},
		{"*.state.update", "a.b.state.update", false},
		{"*", "portfolio_001", true},
		{"*", "portfolio_001.state", false},
		{"portfolio_*.state.update", "portfolio_042.state.update", true},
		{"portfolio_*.state.update", "fund_042.state.update", false},
		{"*_0*1.*.update", "portfolio_001.cash.update", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false},
		{"**", "portfolio_001.state.update", true},
		{"**", "x", true},
		{"portfolio_001.**", "portfolio_001.state.update", true},
		{"portfolio_001.**", "portfolio_001", true},
		{"portfolio_001.**", "portfolio_0011.state.update", false},
		{"**.update", "portfolio_001.state.update", true},
		{"**.update", "update", true},
		{"**.update", "portfolio_001.state.updated", false},
		{"portfolio_001.**.update", "portfolio_001.update", true},
		{"portfolio_001.**.update", "portfolio_001.a.b.c.update", true},
		{"portfolio_001.**.update", "portfolio_001.a.b.c.update.x", false},
		{"**.state.**", "p.state.update", true},
		{"**.state.**", "p.states.update", false},
		{"**.*.update", "update", false},
		{"**.*.update", "x.update", true},
		{"a.**.**.b", "a.b", true},
		{"a.**.b.**.c", "a.x.b.y.b.z.c", true},
		{"a.**.b.**.c", "a.x.c.b", false},
		{"*.*", "a.", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s~%s", tt.pattern, tt.key), func(t *testing.T) {
			t.Parallel()
			f := mustCompile(t, &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{tt.pattern}})
			ev := event("p", pdsv1.PortfolioDataType_PORTFOLIO_STATE, tt.key, 0, 0)
			if got := f.Match(ev); got != tt.want {
				t.Errorf("pattern %q on routing key %q: Match = %v, want %v", tt.pattern, tt.key, got, tt.want)
			}
		})
	}
}

func TestRoutingKeyPatternHasNoBacktrackingBlowUp(t *testing.T) {
	t.Parallel()
	// A regexp-by-backtracking or recursive glob takes exponential time here; a linear matcher finishes at once.
	pattern := strings.Repeat("**.a.", 25) + "b"
	key := strings.Repeat("a.", 120) + "c"
	f := mustCompile(t, &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{pattern, strings.Repeat("*a", 60) + "b"}})
	ev := event("p", pdsv1.PortfolioDataType_PORTFOLIO_STATE, key, 0, 0)
	for range 100 {
		if f.Match(ev) {
			t.Fatalf("patterns matched key %q, which ends in c", key)
		}
	}
}

func TestCELCostLimitCountsAsNoMatch(t *testing.T) {
	t.Parallel()
	positions := func(n int) *pdsv1.PortfolioDistribution {
		ev := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.state.update", 0, 1)
		details := &pdsv1.PortfolioStateDetails{}
		for i := range n {
			details.Positions = append(details.Positions, &pdsv1.Position{InstrumentId: fmt.Sprint(i), Weight: 0.001})
		}
		ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: details}
		return ev
	}
	// Quadratic in the number of positions: cheap for 10, far over the cost limit for 1000.
	f := mustCompile(t, &pdsv1.SubscriptionFilters{
		Cel: "event.data.portfolio_state.positions.all(a, event.data.portfolio_state.positions.all(b, a.weight + b.weight < 1.0))",
	})
	tests := []struct {
		name      string
		positions int
		want      bool
	}{
		{name: "within the cost limit", positions: 10, want: true},
		{name: "over the cost limit", positions: 1000, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := f.Match(positions(tt.positions)); got != tt.want {
				t.Errorf("Match with %d positions = %v, want %v", tt.positions, got, tt.want)
			}
		})
	}
}

func TestCompileRejectsInvalidFilters(t *testing.T) {
	t.Parallel()
	many := func(n int, s string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	tests := []struct {
		name      string
		filters   *pdsv1.SubscriptionFilters
		wantField string
		wantText  string
	}{
		{name: "CEL syntax error", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.total_value >"},
			wantField: "filters.cel", wantText: "Syntax error"},
		{name: "CEL unknown field", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.totalValue > 1.0"},
			wantField: "filters.cel", wantText: "undefined field 'totalValue'"},
		{name: "CEL unknown variable", filters: &pdsv1.SubscriptionFilters{Cel: "evt.data.total_value > 1.0"},
			wantField: "filters.cel", wantText: "undeclared reference to 'evt'"},
		{name: "CEL non-bool result", filters: &pdsv1.SubscriptionFilters{Cel: "event.data.total_value * 2.0"},
			wantField: "filters.cel", wantText: "must evaluate to bool (got double)"},
		{name: "CEL dyn result", filters: &pdsv1.SubscriptionFilters{Cel: "dyn(event.data.total_value)"},
			wantField: "filters.cel", wantText: "must evaluate to bool"},
		{name: "CEL at 2049 characters", filters: &pdsv1.SubscriptionFilters{Cel: "true" + strings.Repeat(" ", 2045)},
			wantField: "filters.cel", wantText: "at most 2048 characters (got 2049)"},
		{name: "pattern with ** inside a segment", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{"ok.*", "a**.b"}},
			wantField: "filters.routing_key_patterns[1]", wantText: `"**" must be a whole segment`},
		{name: "pattern with an empty segment", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{"a..b"}},
			wantField: "filters.routing_key_patterns[0]", wantText: "segment 2 is empty"},
		{name: "pattern ending with a dot", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{"a."}},
			wantField: "filters.routing_key_patterns[0]", wantText: "is empty"},
		{name: "empty pattern", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{""}},
			wantField: "filters.routing_key_patterns[0]", wantText: "must not be empty"},
		{name: "pattern with a space", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{"a b"}},
			wantField: "filters.routing_key_patterns[0]", wantText: "without spaces"},
		{name: "pattern at 257 characters", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: []string{strings.Repeat("k", 257)}},
			wantField: "filters.routing_key_patterns[0]", wantText: "at most 256 characters (got 257)"},
		{name: "1001 patterns", filters: &pdsv1.SubscriptionFilters{RoutingKeyPatterns: many(1001, "*.state.update")},
			wantField: "filters.routing_key_patterns", wantText: "at most 1000 entries (got 1001)"},
		{name: "1001 portfolio ids", filters: &pdsv1.SubscriptionFilters{PortfolioIds: many(1001, "p1")},
			wantField: "filters.portfolio_ids", wantText: "at most 1000 entries (got 1001)"},
		{name: "portfolio id at 101 characters", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{"p", strings.Repeat("p", 101)}},
			wantField: "filters.portfolio_ids[1]", wantText: "at most 100 characters (got 101)"},
		{name: "empty portfolio id", filters: &pdsv1.SubscriptionFilters{PortfolioIds: []string{""}},
			wantField: "filters.portfolio_ids[0]", wantText: "is required"},
		{name: "1001 data types", filters: &pdsv1.SubscriptionFilters{DataTypes: make([]pdsv1.PortfolioDataType, 1001)},
			wantField: "filters.data_types", wantText: "at most 1000 entries (got 1001)"},
		{name: "unspecified data type", filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{0}},
			wantField: "filters.data_types[0]", wantText: "must be one of"},
		{name: "unknown data type", filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{1, 77}},
			wantField: "filters.data_types[1]", wantText: "got 77"},
		{name: "min_priority 10", filters: &pdsv1.SubscriptionFilters{MinPriority: 10},
			wantField: "filters.min_priority", wantText: "from 0 to 9 (got 10)"},
		{name: "min_priority -1", filters: &pdsv1.SubscriptionFilters{MinPriority: -1},
			wantField: "filters.min_priority", wantText: "got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := filter.Compile(tt.filters)
			if err == nil {
				t.Fatalf("Compile accepted invalid filters (got %v)", f)
			}
			var errs apierr.FieldErrors
			if !errors.As(err, &errs) {
				t.Fatalf("Compile error %v (%T) is not an apierr.FieldErrors", err, err)
			}
			if errs[0].Field != tt.wantField {
				t.Errorf("first error field = %q, want %q (error: %v)", errs[0].Field, tt.wantField, err)
			}
			if !strings.Contains(errs[0].Description, tt.wantText) {
				t.Errorf("error %q does not say %q", errs[0].Description, tt.wantText)
			}
		})
	}
}

func TestCompileAcceptsFiltersAtTheLimits(t *testing.T) {
	t.Parallel()
	ids := make([]string, 1000)
	patterns := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("portfolio_%04d", i)
		patterns[i] = fmt.Sprintf("portfolio_%04d.*.update", i)
	}
	f := mustCompile(t, &pdsv1.SubscriptionFilters{
		PortfolioIds:       ids,
		RoutingKeyPatterns: patterns,
		MinPriority:        9,
		Cel:                "event.routing.priority == 9" + strings.Repeat(" ", 2048-len("event.routing.priority == 9")),
	})
	ev := event("portfolio_0999", pdsv1.PortfolioDataType_CASH_MANAGEMENT, "portfolio_0999.cash.update", 9, 1)
	if !f.Match(ev) {
		t.Errorf("filters at every limit did not match an event they select")
	}
}

func TestCompileReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := filter.Compile(&pdsv1.SubscriptionFilters{
		PortfolioIds:       []string{""},
		RoutingKeyPatterns: []string{"a**"},
		MinPriority:        11,
		Cel:                "1 +",
	})
	var errs apierr.FieldErrors
	if !errors.As(err, &errs) {
		t.Fatalf("Compile error %v is not an apierr.FieldErrors", err)
	}
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	want := "filters.portfolio_ids[0],filters.routing_key_patterns[0],filters.min_priority,filters.cel"
	if strings.Join(fields, ",") != want {
		t.Errorf("error fields = %v, want %s", fields, want)
	}
}

func TestCompilerAdaptsToConfigFSM(t *testing.T) {
	t.Parallel()
	var compile configfsm.FilterCompiler = filter.Compiler
	tests := []struct {
		name      string
		filters   *pdsv1.SubscriptionFilters
		wantErr   bool
		wantMatch bool
	}{
		{name: "nil filters match all", filters: nil, wantMatch: true},
		{name: "valid filters", filters: &pdsv1.SubscriptionFilters{DataTypes: []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_RISK_BUDGET}}, wantMatch: false},
		{name: "invalid filters", filters: &pdsv1.SubscriptionFilters{Cel: "("}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := compile(tt.filters)
			if tt.wantErr {
				if err == nil || m != nil {
					t.Fatalf("Compiler = (%v, %v), want a nil Matcher and an error", m, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Compiler: %v", err)
			}
			if got := m.Match(stateEvent); got != tt.wantMatch {
				t.Errorf("Match = %v, want %v", got, tt.wantMatch)
			}
		})
	}
}

func TestMatchIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	f := mustCompile(t, &pdsv1.SubscriptionFilters{
		RoutingKeyPatterns: []string{"portfolio_*.state.**"},
		Cel:                "event.data.total_value > 500.0",
	})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				value := float64((g*500 + i) % 1000)
				ev := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.state.update", 0, value)
				if got, want := f.Match(ev), value > 500; got != want {
					errs <- fmt.Sprintf("goroutine %d: Match(total_value=%v) = %v, want %v", g, value, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestMatchesAll(t *testing.T) {
	t.Parallel()
	if !mustCompile(t, nil).MatchesAll() {
		t.Error("Compile(nil).MatchesAll() = false, want true")
	}
	if mustCompile(t, &pdsv1.SubscriptionFilters{MinPriority: 1}).MatchesAll() {
		t.Error("a filter with min_priority 1 claims to match all")
	}
}
