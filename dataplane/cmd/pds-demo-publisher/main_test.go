package main

import "testing"

func TestParseFlagsRejectsOutOfRangeValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"zero rate", []string{"--rate", "0"}},
		{"too many portfolios", []string{"--portfolios", "1000"}},
		{"no portfolios", []string{"--portfolios", "0"}},
		{"negative duration", []string{"--duration", "-1s"}},
		{"zero log interval", []string{"--log-every", "0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := parseFlags(tt.args); err == nil {
				t.Fatalf("parseFlags(%q) accepted an out-of-range value", tt.args)
			}
		})
	}
}
