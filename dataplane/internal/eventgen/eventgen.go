// Package eventgen makes realistic PortfolioDistribution events (300–500 bytes once PDS filled its defaults):
// every portfolio's total value follows a random walk, and the data types take turns, each with its typed
// details. The demo publisher and the load tool use it.
package eventgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// portfolio is the evolving state behind one portfolio's events.
type portfolio struct {
	id          string
	totalValue  float64
	dailyReturn float64
	ytdReturn   float64
	cash        float64
	// weights of instruments, same order as the generator's instruments.
	weights []float64
	// utilization of the risk budget, 0..1.
	riskUtilization float64
	rebalances      int
}

// Generator makes a stream of events. It is not safe for concurrent use.
type Generator struct {
	rng        *rand.Rand
	now        func() time.Time
	portfolios []*portfolio
	dataTypes  []pdsv1.PortfolioDataType
	seq        int
}

var instruments = []string{"AAPL", "MSFT", "NVDA", "AMZN", "BND", "GLD"}

// DataTypes are the five data types, in the order a Generator without Options.DataTypes cycles through them.
var DataTypes = []pdsv1.PortfolioDataType{
	pdsv1.PortfolioDataType_PORTFOLIO_STATE,
	pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION,
	pdsv1.PortfolioDataType_REBALANCING,
	pdsv1.PortfolioDataType_RISK_BUDGET,
	pdsv1.PortfolioDataType_CASH_MANAGEMENT,
}

// Options shape a Generator's events.
type Options struct {
	// Portfolios is how many portfolios (portfolio_001 …) the events are about. Zero means 1.
	Portfolios int
	// Seed makes the values repeatable; zero seeds from the clock.
	Seed uint64
	// Now stamps the dates inside the details (attribution periods, cash flow dates). Nil means time.Now.
	Now func() time.Time
	// DataTypes are the data types the events take in turn. Empty means all of DataTypes. A topic carries
	// one data type, so a load test on one topic gives exactly one.
	DataTypes []pdsv1.PortfolioDataType
}

// New returns a generator with opts.
func New(opts Options) *Generator {
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	types := opts.DataTypes
	if len(types) == 0 {
		types = DataTypes
	}
	g := &Generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: now, dataTypes: slices.Clone(types)}
	for i := range max(opts.Portfolios, 1) {
		p := &portfolio{
			id:              PortfolioID(i),
			totalValue:      round2(500_000 + g.rng.Float64()*4_500_000),
			riskUtilization: 0.5 + g.rng.Float64()*0.3,
		}
		p.cash = round2(p.totalValue * 0.04)
		p.weights = g.weights()
		g.portfolios = append(g.portfolios, p)
	}
	return g
}

// PortfolioID is the id of portfolio i (0-based) of a Generator: portfolio_001 for 0.
func PortfolioID(i int) string { return fmt.Sprintf("portfolio_%03d", i+1) }

// Next returns the next event: portfolios take turns, and each portfolio cycles through the data types.
// Its event_id, timestamp, topic and routing key are left empty for PDS to fill in; target_workflows and
// priority are the demo's choice per data type.
func (g *Generator) Next() *pdsv1.PortfolioDistribution {
	p := g.portfolios[g.seq%len(g.portfolios)]
	dataType := g.dataTypes[(g.seq/len(g.portfolios))%len(g.dataTypes)]
	g.seq++
	g.step(p)

	data := &pdsv1.PortfolioData{
		PortfolioId: p.id,
		TotalValue:  p.totalValue,
		PerformanceMetrics: &pdsv1.PerformanceMetricsData{
			DailyReturn: round4(p.dailyReturn),
			YtdReturn:   round4(p.ytdReturn),
		},
	}
	routing := &pdsv1.RoutingInfo{Priority: 3}
	switch dataType {
	case pdsv1.PortfolioDataType_PORTFOLIO_STATE:
		data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: g.state(p)}
		routing.TargetWorkflows = []string{"reporting_analytics", "user_interface"}
	case pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION:
		data.Details = &pdsv1.PortfolioData_PerformanceAttribution{PerformanceAttribution: g.attribution(p)}
		routing.TargetWorkflows = []string{"reporting_analytics"}
	case pdsv1.PortfolioDataType_REBALANCING:
		data.Details = &pdsv1.PortfolioData_Rebalancing{Rebalancing: g.rebalancing(p)}
		routing.TargetWorkflows = []string{"trade_execution", "user_interface"}
		routing.Priority = 7
	case pdsv1.PortfolioDataType_RISK_BUDGET:
		data.Details = &pdsv1.PortfolioData_RiskBudget{RiskBudget: g.riskBudget(p)}
		routing.Priority = 5
	case pdsv1.PortfolioDataType_CASH_MANAGEMENT:
		data.Details = &pdsv1.PortfolioData_CashManagement{CashManagement: g.cash(p)}
		routing.TargetWorkflows = []string{"treasury", "user_interface"}
	}
	return &pdsv1.PortfolioDistribution{DataType: dataType, Data: data, Routing: routing}
}

// step moves the portfolio's value by a small random return (about 1% daily volatility).
func (g *Generator) step(p *portfolio) {
	r := g.rng.NormFloat64() * 0.001
	p.totalValue = round2(p.totalValue * (1 + r))
	p.dailyReturn = 0.9*p.dailyReturn + r
	p.ytdReturn = (1+p.ytdReturn)*(1+r) - 1
	p.cash = round2(max(0, p.cash+g.rng.NormFloat64()*500))
	p.riskUtilization = min(1, max(0.2, p.riskUtilization+g.rng.NormFloat64()*0.01))
}

// weights returns random instrument weights that add up to 1.
func (g *Generator) weights() []float64 {
	w := make([]float64, len(instruments))
	var sum float64
	for i := range w {
		w[i] = 0.5 + g.rng.Float64()
		sum += w[i]
	}
	for i := range w {
		w[i] /= sum
	}
	return w
}

func (g *Generator) state(p *portfolio) *pdsv1.PortfolioStateDetails {
	invested := p.totalValue - p.cash
	// Five holdings: equities and a bond fund, the gold fund being the one left out.
	positions := make([]*pdsv1.Position, 0, 5)
	for i, inst := range instruments[:5] {
		value := invested * p.weights[i]
		price := 100 + float64(i)*75
		positions = append(positions, &pdsv1.Position{
			InstrumentId: inst,
			Quantity:     math.Round(value / price),
			MarketValue:  round2(value),
			Weight:       round4(p.weights[i]),
		})
	}
	return &pdsv1.PortfolioStateDetails{Currency: "USD", CashBalance: p.cash, Positions: positions}
}

func (g *Generator) attribution(p *portfolio) *pdsv1.PerformanceAttributionDetails {
	today := g.now().UTC()
	segments := []string{"technology", "fixed_income", "commodities"}
	effects := make([]*pdsv1.AttributionEffect, 0, len(segments))
	for _, s := range segments {
		effects = append(effects, &pdsv1.AttributionEffect{
			Segment:           s,
			AllocationEffect:  round4(g.rng.NormFloat64() * 0.002),
			SelectionEffect:   round4(g.rng.NormFloat64() * 0.002),
			InteractionEffect: round4(g.rng.NormFloat64() * 0.0005),
		})
	}
	return &pdsv1.PerformanceAttributionDetails{
		BenchmarkId:  "MSCI_ACWI",
		PeriodStart:  time.Date(today.Year(), 1, 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly),
		PeriodEnd:    today.Format(time.DateOnly),
		ActiveReturn: round4(p.ytdReturn - 0.05),
		Effects:      effects,
	}
}

func (g *Generator) rebalancing(p *portfolio) *pdsv1.RebalancingDetails {
	p.rebalances++
	trades := make([]*pdsv1.Trade, 0, 3)
	for i := range 3 {
		side := "BUY"
		if g.rng.IntN(2) == 0 {
			side = "SELL"
		}
		trades = append(trades, &pdsv1.Trade{
			InstrumentId: instruments[(p.rebalances+i)%len(instruments)],
			Side:         side,
			Quantity:     float64(10 + g.rng.IntN(490)),
			TargetWeight: round4(p.weights[(p.rebalances+i)%len(instruments)]),
		})
	}
	return &pdsv1.RebalancingDetails{
		RebalanceId: fmt.Sprintf("rb-%s-%06d", p.id, p.rebalances),
		Reason:      "drift beyond the 5% tolerance band",
		Status:      "proposed",
		Trades:      trades,
	}
}

func (g *Generator) riskBudget(p *portfolio) *pdsv1.RiskBudgetDetails {
	factors := []string{"equity", "rates", "credit", "fx"}
	shares := []float64{0.5, 0.25, 0.15, 0.1}
	const total = 0.12
	allocations := make([]*pdsv1.RiskAllocation, 0, len(factors))
	for i, f := range factors {
		allocations = append(allocations, &pdsv1.RiskAllocation{
			Factor:      f,
			Budget:      round4(total * shares[i]),
			Utilization: round4(min(1, p.riskUtilization*(0.8+g.rng.Float64()*0.4))),
		})
	}
	return &pdsv1.RiskBudgetDetails{
		TotalRiskBudget: total,
		Utilized:        round4(total * p.riskUtilization),
		ValueAtRisk_95:  round2(p.totalValue * 0.0165 * p.riskUtilization),
		Allocations:     allocations,
	}
}

func (g *Generator) cash(p *portfolio) *pdsv1.CashManagementDetails {
	today := g.now().UTC()
	descriptions := []string{"dividend AAPL", "settlement MSFT purchase", "management fee"}
	flows := make([]*pdsv1.CashFlow, 0, len(descriptions))
	var pending float64
	for i, d := range descriptions {
		amount := round2(g.rng.NormFloat64() * 5_000)
		pending += amount
		flows = append(flows, &pdsv1.CashFlow{
			Date:        today.AddDate(0, 0, i+1).Format(time.DateOnly),
			Amount:      amount,
			Description: d,
		})
	}
	return &pdsv1.CashManagementDetails{
		Currency:           "USD",
		AvailableCash:      p.cash,
		PendingSettlements: round2(pending),
		Flows:              flows,
	}
}

func round2(v float64) float64 { return positiveZero(math.Round(v*100) / 100) }
func round4(v float64) float64 { return positiveZero(math.Round(v*10_000) / 10_000) }

// positiveZero turns -0 (a small negative number rounded) into 0: PDS stores -0 as 0, and an event should
// be stored as it was sent.
func positiveZero(v float64) float64 {
	if v == 0 {
		return 0
	}
	return v
}
