package filter_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// summaryEvents are encodings that stress the summary's decoding rules; each comes with how it was built.
func summaryEvents(t testing.TB) []struct {
	name    string
	encoded []byte
} {
	t.Helper()
	marshal := func(ev *pdsv1.PortfolioDistribution) []byte {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withTargets := event("portfolio_002", pdsv1.PortfolioDataType_CASH_MANAGEMENT, "portfolio_002.cash.update", 9, 10)
	withTargets.Routing.TargetWorkflows = []string{"risk", "reporting_analytics", "user_interface"}
	noTargets := event("portfolio_003", pdsv1.PortfolioDataType_REBALANCING, "portfolio_003.rebalancing.update", 0, 10)
	noTargets.Routing.TargetWorkflows = nil
	// Two routing and data messages and a repeated scalar: the later values win, the lists concatenate.
	merged := marshal(event("portfolio_004", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "first.key", 1, 10))
	merged = append(merged, marshal(&pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_RISK_BUDGET,
		Data:     &pdsv1.PortfolioData{PortfolioId: "portfolio_005"},
		Routing:  &pdsv1.RoutingInfo{RoutingKey: "portfolio_005.risk_budget.update", TargetWorkflows: []string{"risk"}, Priority: 7},
	})...)
	// Fields a newer producer might add are skipped.
	unknown := marshal(stateEvent)
	unknown = protowire.AppendTag(unknown, 99, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "future")
	unknown = protowire.AppendTag(unknown, 98, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 7)
	unknown = protowire.AppendTag(unknown, 97, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	return []struct {
		name    string
		encoded []byte
	}{
		{name: "state event", encoded: marshal(stateEvent)},
		{name: "three targets", encoded: marshal(withTargets)},
		{name: "no targets", encoded: marshal(noTargets)},
		{name: "empty event", encoded: marshal(&pdsv1.PortfolioDistribution{})},
		{name: "merged messages", encoded: merged},
		{name: "unknown fields", encoded: unknown},
	}
}

// TestSummaryDecidesLikeTheDecodedEvent checks that workflow targeting and every native filter give the
// same answer on a Summary as on the decoded event, and that a Summary leaves only CEL undecided.
func TestSummaryDecidesLikeTheDecodedEvent(t *testing.T) {
	t.Parallel()
	filters := []*pdsv1.SubscriptionFilters{
		nil,
		{PortfolioIds: []string{"portfolio_001", "portfolio_005"}},
		{DataTypes: []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_RISK_BUDGET, pdsv1.PortfolioDataType_REBALANCING}},
		{RoutingKeyPatterns: []string{"*.state.update", "portfolio_00[5].**", "portfolio_002.**"}},
		{MinPriority: 5},
		{MinPriority: 1, DataTypes: []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_CASH_MANAGEMENT}},
		{Cel: "event.data.total_value > 100.0"},
		{PortfolioIds: []string{"portfolio_001"}, Cel: "event.data.total_value > 100.0"},
	}
	workflows := []string{"reporting_analytics", "risk", "user_interface", "nobody"}
	for _, ev := range summaryEvents(t) {
		t.Run(ev.name, func(t *testing.T) {
			t.Parallel()
			var decoded pdsv1.PortfolioDistribution
			if err := proto.Unmarshal(ev.encoded, &decoded); err != nil {
				t.Fatalf("decode: %v", err)
			}
			var s filter.Summary
			if err := filter.Summarize(ev.encoded, &s); err != nil {
				t.Fatalf("Summarize: %v", err)
			}
			for _, w := range workflows {
				if got, want := s.TargetsWorkflow(w), routing.TargetsWorkflow(&decoded, w); got != want {
					t.Errorf("TargetsWorkflow(%q) = %v on the summary, %v on the decoded event", w, got, want)
				}
			}
			var targets []string
			for _, w := range s.Targets() {
				targets = append(targets, string(w))
			}
			if want := decoded.GetRouting().GetTargetWorkflows(); !slices.Equal(targets, want) {
				t.Errorf("Targets() = %q, the decoded event targets %q", targets, want)
			}
			for i, fs := range filters {
				f, err := filter.Compile(fs)
				if err != nil {
					t.Fatalf("compile filters %d: %v", i, err)
				}
				want := f.Match(&decoded)
				match, decided := f.MatchSummary(&s)
				if decided && match != want {
					t.Errorf("filters %d (%v): summary decided %v, decoded event %v", i, fs, match, want)
				}
				if !decided && (fs.GetCel() == "" || !match) {
					t.Errorf("filters %d (%v): summary left undecided without a CEL expression to run", i, fs)
				}
			}
		})
	}
}

func TestSummarizeRejectsWhatItCannotRead(t *testing.T) {
	t.Parallel()
	tooManyTargets := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "k", 0, 1)
	tooManyTargets.Routing.TargetWorkflows = make([]string, routing.MaxTargetWorkflows+1)
	for i := range tooManyTargets.Routing.TargetWorkflows {
		tooManyTargets.Routing.TargetWorkflows[i] = fmt.Sprintf("w%d", i)
	}
	encoded, err := proto.Marshal(tooManyTargets)
	if err != nil {
		t.Fatal(err)
	}
	valid, err := proto.Marshal(stateEvent)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		encoded []byte
	}{
		{name: "more targets than Normalize allows", encoded: encoded},
		{name: "truncated", encoded: valid[:len(valid)-3]},
		{name: "bad tag", encoded: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s filter.Summary
			if err := filter.Summarize(tt.encoded, &s); err == nil {
				t.Fatal("Summarize succeeded; want an error so the caller decodes the event")
			}
		})
	}
}

// BenchmarkSkipEvent is what a subscription pays to reject an encoded event it does not take: decoding it
// and matching, against summarizing it and matching the summary.
func BenchmarkSkipEvent(b *testing.B) {
	ev := event("portfolio_001", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio_001.state.update", 5, 1_000_000)
	ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
		Currency: "USD", CashBalance: 25000,
		Positions: []*pdsv1.Position{{InstrumentId: "AAPL", Quantity: 100, MarketValue: 19000, Weight: 0.019}},
	}}
	encoded, err := proto.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	f, err := filter.Compile(&pdsv1.SubscriptionFilters{PortfolioIds: []string{"portfolio_002"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode and match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var decoded pdsv1.PortfolioDistribution
			if err := proto.Unmarshal(encoded, &decoded); err != nil {
				b.Fatal(err)
			}
			if f.Match(&decoded) {
				b.Fatal("must not match")
			}
		}
	})
	b.Run("summarize and match", func(b *testing.B) {
		b.ReportAllocs()
		var s filter.Summary
		for b.Loop() {
			if err := filter.Summarize(encoded, &s); err != nil {
				b.Fatal(err)
			}
			if match, decided := f.MatchSummary(&s); match || !decided {
				b.Fatal("must be decided as no match")
			}
		}
	})
}
