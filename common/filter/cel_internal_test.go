package filter

import "testing"

// Expressions over fields with validated sizes must skip runtime cost tracking (several times faster);
// loops over unbounded lists must keep it.
func TestCELCostTrackingOnlyWhenUnbounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr        string
		wantTracked bool
	}{
		{expr: "event.data.total_value > 1000000.0", wantTracked: false},
		{expr: `event.routing.routing_key.startsWith("portfolio_001.") && event.routing.priority >= 5`, wantTracked: false},
		{expr: `"reporting" in event.routing.target_workflows`, wantTracked: false},
		{expr: `event.routing.target_workflows.exists(w, w.endsWith("_ui"))`, wantTracked: false},
		{expr: `event.data.portfolio_state.positions.exists(p, p.weight > 0.5)`, wantTracked: true},
		{expr: `event.data.portfolio_state.currency.matches("^US.*")`, wantTracked: true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			p, err := compileCEL(tt.expr)
			if err != nil {
				t.Fatalf("compileCEL: %v", err)
			}
			if p.costTracked != tt.wantTracked {
				t.Errorf("costTracked = %v, want %v", p.costTracked, tt.wantTracked)
			}
		})
	}
}
