package loadgen

import (
	"strings"
	"testing"
)

func TestResultSaturated(t *testing.T) {
	t.Parallel()
	keptUp := Result{OfferedRate: 10000, AchievedPublishRate: 9990, Complete: true, Latency: Latency{P99: 80}}
	cases := []struct {
		name   string
		change func(r *Result)
		want   string // part of the reason; empty: not saturated
	}{
		{"kept up", func(*Result) {}, ""},
		{"publishers behind", func(r *Result) { r.AchievedPublishRate = 9000 }, "published 9000 of 10000"},
		{"deliveries missing after the drain", func(r *Result) { r.Complete, r.Lost = false, 12 }, "12 deliveries still missing"},
		{"latency grew through the run", func(r *Result) { r.Latency.P99 = 5001 }, "P99 5001 ms"},
	}
	for _, tc := range cases {
		r := keptUp
		tc.change(&r)
		saturated, why := r.Saturated()
		if saturated != (tc.want != "") || !strings.Contains(why, tc.want) {
			t.Errorf("%s: Saturated() = %v, %q; want %v with %q", tc.name, saturated, why, tc.want != "", tc.want)
		}
	}
	var none *Result
	if saturated, _ := none.Saturated(); saturated {
		t.Error("a missing run counts as saturated")
	}
}
