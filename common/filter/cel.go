package filter

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

const (
	// MaxCELLength is the longest cel expression, in characters.
	MaxCELLength = 2048
	// MaxCELCost is the runtime cost limit of one evaluation (CEL cost units, roughly one per operation
	// or per list element visited). An evaluation that exceeds it counts as no match. It bounds the CPU
	// one subscription can spend per event: about ten thousand field comparisons.
	MaxCELCost = 100_000
	// celVariable is the name the expression uses for the event.
	celVariable = "event"
)

// celEnv is built once: building it registers the pds.v1 types, which is slow. cel.Env is safe for
// concurrent use.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Types(&pdsv1.PortfolioDistribution{}),
		// "pds.v1" lets expressions write PortfolioDataType.REBALANCING without the package.
		cel.Container("pds.v1"),
		cel.Variable(celVariable, cel.ObjectType("pds.v1.PortfolioDistribution")),
		// total_value > 1000000 should work like total_value > 1000000.0.
		cel.CrossTypeNumericComparisons(true),
		cel.ParserExpressionSizeLimit(MaxCELLength),
	)
})

// celProgram is a compiled, type-checked expression; cel.Program is safe for concurrent use.
type celProgram struct {
	program cel.Program
	// costTracked is set when the worst-case cost could not be bounded at compile time, so every
	// evaluation counts its cost and stops at MaxCELCost.
	costTracked bool
}

// compileCEL parses and type-checks expr. The error text quotes CEL's own diagnostics.
func compileCEL(expr string) (*celProgram, error) {
	if n := utf8.RuneCountInString(expr); n > MaxCELLength {
		return nil, fmt.Errorf("at most %d characters (got %d); simplify the expression or use the other filters", MaxCELLength, n)
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("CEL environment unavailable: %w", err)
	}
	ast, issues := env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		return nil, fmt.Errorf("invalid CEL expression over `event` (pds.v1.PortfolioDistribution, snake_case fields): %s",
			strings.TrimPrefix(issues.Err().Error(), "ERROR: "))
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, fmt.Errorf("must evaluate to bool (got %s); compare the value, e.g. `event.data.total_value > 1000000.0`",
			ast.OutputType())
	}
	// Runtime cost tracking makes every evaluation several times slower and allocate more, so it is kept
	// for expressions whose worst case cannot be bounded up front (e.g. a loop over the positions).
	options := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	estimate, err := env.EstimateCost(ast, boundedFields{})
	costTracked := err != nil || estimate.Max > MaxCELCost
	if costTracked {
		options = append(options, cel.CostLimit(MaxCELCost))
	}
	program, err := env.Program(ast, options...)
	if err != nil {
		return nil, fmt.Errorf("invalid CEL expression: %w", err)
	}
	return &celProgram{program: program, costTracked: costTracked}, nil
}

// boundedFields tells CEL's cost estimator the sizes Normalize guarantees for the event's strings and
// lists, so expressions over them get a finite worst-case cost. Other fields stay unbounded.
type boundedFields struct{}

var _ checker.CostEstimator = boundedFields{}

// fieldSizeLimits are keyed by the estimator's path: the variable, then field names or "@items".
var fieldSizeLimits = map[string]uint64{
	"event.event_id":                        routing.MaxEventIDLength,
	"event.timestamp":                       uint64(len(routing.TimestampLayout)),
	"event.data.portfolio_id":               routing.MaxPortfolioIDLength,
	"event.routing.topic":                   routing.MaxTopicLength,
	"event.routing.routing_key":             routing.MaxRoutingKeyLength,
	"event.routing.target_workflows":        routing.MaxTargetWorkflows,
	"event.routing.target_workflows.@items": routing.MaxWorkflowLength,
}

func (boundedFields) EstimateSize(node checker.AstNode) *checker.SizeEstimate {
	path := node.Path()
	if len(path) == 0 {
		return nil
	}
	limit, ok := fieldSizeLimits[strings.Join(path, ".")]
	if !ok {
		return nil
	}
	return &checker.SizeEstimate{Min: 0, Max: limit}
}

func (boundedFields) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// match evaluates the program against ev; any evaluation error or non-bool result is no match.
func (p *celProgram) match(ev *pdsv1.PortfolioDistribution) bool {
	out, _, err := p.program.Eval(eventActivation{event: ev})
	if err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	return ok && bool(b)
}

// eventActivation binds the single variable without the map an ordinary activation allocates.
type eventActivation struct {
	event *pdsv1.PortfolioDistribution
}

var _ interpreter.Activation = eventActivation{}

func (a eventActivation) ResolveName(name string) (any, bool) {
	if name == celVariable {
		return a.event, true
	}
	return nil, false
}

func (eventActivation) Parent() interpreter.Activation { return nil }
