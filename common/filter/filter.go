// Package filter compiles a subscription's filters into a Matcher that every data-plane node evaluates
// identically: portfolio ids, data types, routing-key globs, a minimum priority and a CEL expression.
// Every set filter must match (AND); within one list any entry may match (OR); empty lists match all.
//
// Routing-key patterns split key and pattern at '.': "*" matches any run of characters within one segment
// ("*.state.update", "portfolio_*.cash.update"), "**" as a whole segment matches any number of segments,
// zero included ("portfolio_001.**" matches "portfolio_001" too). The CEL expression sees the published
// event as `event` (pds.v1.PortfolioDistribution, snake_case field names, enums by name within pds.v1,
// e.g. `event.data_type == PortfolioDataType.REBALANCING && event.data.total_value > 1e6`).
package filter

import (
	"fmt"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// MaxListEntries is the most entries each filter list (portfolio_ids, data_types, routing_key_patterns) may hold.
const MaxListEntries = 1000

// Filter is a compiled SubscriptionFilters. It never changes once built and Match is safe for concurrent use.
// The zero value is not usable; a Filter from Compile(nil) matches every event.
type Filter struct {
	portfolioIDs map[string]struct{} // nil: any portfolio
	dataTypes    uint64              // bit n set: data type n passes; 0: any data type
	patterns     []keyPattern        // empty: any routing key
	minPriority  int32
	cel          *celProgram // nil: no expression
}

var _ configfsm.Matcher = (*Filter)(nil)

// Compiler adapts Compile to configfsm.FilterCompiler: nil filters give a Filter matching every event.
func Compiler(filters *pdsv1.SubscriptionFilters) (configfsm.Matcher, error) {
	f, err := Compile(filters)
	if err != nil {
		return nil, err
	}
	return f, nil
}

var _ configfsm.FilterCompiler = Compiler

// Compile validates filters and compiles them. nil or empty filters match every event. On invalid input the
// error is an apierr.FieldErrors listing every problem with fields such as "filters.portfolio_ids[3]",
// "filters.routing_key_patterns[1]", "filters.min_priority" or "filters.cel" (quoting CEL's own message).
// Compile is deterministic: the same filters always compile to the same behaviour.
func Compile(filters *pdsv1.SubscriptionFilters) (*Filter, error) {
	f := &Filter{}
	if filters == nil {
		return f, nil
	}
	var errs apierr.FieldErrors

	if ids := filters.GetPortfolioIds(); len(ids) > 0 {
		if len(ids) > MaxListEntries {
			errs = append(errs, tooMany("filters.portfolio_ids", len(ids)))
		}
		f.portfolioIDs = make(map[string]struct{}, len(ids))
		for i, id := range ids {
			if e := routing.CheckPortfolioID(fmt.Sprintf("filters.portfolio_ids[%d]", i), id); e != nil {
				errs = append(errs, e)
				continue
			}
			f.portfolioIDs[id] = struct{}{}
		}
	}

	if types := filters.GetDataTypes(); len(types) > 0 {
		if len(types) > MaxListEntries {
			errs = append(errs, tooMany("filters.data_types", len(types)))
		}
		for i, t := range types {
			if _, known := pdsv1.PortfolioDataType_name[int32(t)]; !known || t == pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED || t >= 64 {
				errs = append(errs, apierr.Errorf(fmt.Sprintf("filters.data_types[%d]", i),
					"must be one of PORTFOLIO_STATE, PERFORMANCE_ATTRIBUTION, REBALANCING, RISK_BUDGET, CASH_MANAGEMENT (got %s)", t))
				continue
			}
			f.dataTypes |= 1 << uint(t)
		}
	}

	if patterns := filters.GetRoutingKeyPatterns(); len(patterns) > 0 {
		if len(patterns) > MaxListEntries {
			errs = append(errs, tooMany("filters.routing_key_patterns", len(patterns)))
		}
		f.patterns = make([]keyPattern, 0, len(patterns))
		for i, p := range patterns {
			kp, err := compilePattern(p)
			if err != nil {
				errs = append(errs, apierr.Errorf(fmt.Sprintf("filters.routing_key_patterns[%d]", i), "%s", err.Error()))
				continue
			}
			f.patterns = append(f.patterns, kp)
		}
	}

	f.minPriority = filters.GetMinPriority()
	if f.minPriority < routing.MinPriority || f.minPriority > routing.MaxPriority {
		errs = append(errs, apierr.Errorf("filters.min_priority",
			"must be from %d to %d (got %d); 0 lets every priority through", routing.MinPriority, routing.MaxPriority, f.minPriority))
	}

	if expr := filters.GetCel(); expr != "" {
		prg, err := compileCEL(expr)
		if err != nil {
			errs = append(errs, apierr.Errorf("filters.cel", "%s", err.Error()))
		} else {
			f.cel = prg
		}
	}

	if len(errs) > 0 {
		return nil, errs
	}
	return f, nil
}

// MatchesAll reports whether the filter lets every event through, so a caller may skip calling Match.
func (f *Filter) MatchesAll() bool {
	return f.portfolioIDs == nil && f.dataTypes == 0 && len(f.patterns) == 0 && f.minPriority == 0 && f.cel == nil
}

// Match reports whether ev passes every set filter. The cheap filters run first and CEL last; a CEL
// expression that fails to evaluate (an error, the cost limit, a non-bool result) counts as no match.
// Match is safe for concurrent use and does not modify ev.
func (f *Filter) Match(ev *pdsv1.PortfolioDistribution) bool {
	if ev.GetRouting().GetPriority() < f.minPriority {
		return false
	}
	if f.dataTypes != 0 {
		t := ev.GetDataType()
		if t < 0 || t >= 64 || f.dataTypes&(1<<uint(t)) == 0 {
			return false
		}
	}
	if f.portfolioIDs != nil {
		if _, ok := f.portfolioIDs[ev.GetData().GetPortfolioId()]; !ok {
			return false
		}
	}
	if len(f.patterns) > 0 && !f.matchRoutingKey(ev.GetRouting().GetRoutingKey()) {
		return false
	}
	if f.cel != nil {
		return f.cel.match(ev)
	}
	return true
}

func (f *Filter) matchRoutingKey(key string) bool {
	for i := range f.patterns {
		if f.patterns[i].match(key) {
			return true
		}
	}
	return false
}

func tooMany(field string, n int) *apierr.FieldError {
	return apierr.Errorf(field, "at most %d entries (got %d); use a routing_key_patterns glob or a cel expression instead",
		MaxListEntries, n)
}
