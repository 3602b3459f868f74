package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsAcceptsARunDescription(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{
		"--scenario", "streams", "--system", "pds, engine", "--name", "pds-embedded", "--rates", "10000,25000",
		"--duration", "20s", "--warmup", "5s", "--pid", "dataplane=42", "--pid", "controlplane=43",
	}, io.Discard)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if cfg.scenario.Name != "streams" || !slices.Equal(cfg.systems, []string{"pds", "engine"}) || cfg.name != "pds-embedded" {
		t.Errorf("scenario %q systems %v name %q", cfg.scenario.Name, cfg.systems, cfg.name)
	}
	if !slices.Equal(cfg.rates, []float64{10000, 25000}) || cfg.duration != 20*time.Second || cfg.warmup != 5*time.Second {
		t.Errorf("rates %v duration %v warmup %v", cfg.rates, cfg.duration, cfg.warmup)
	}
	if cfg.pids["dataplane"] != 42 || cfg.pids["controlplane"] != 43 {
		t.Errorf("pids %v", cfg.pids)
	}
}

// A bad command line is refused with a message naming the flag at fault.
func TestParseFlagsRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown scenario", []string{"--scenario", "burst"}, "--scenario"},
		{"unknown system", []string{"--system", "pds,kafka"}, "--system"},
		{"zero rate", []string{"--rates", "10000,0"}, "--rates"},
		{"rate not a number", []string{"--rates", "fast"}, "--rates"},
		{"negative duration", []string{"--duration", "-1s"}, "--duration"},
		{"warm-up longer than the run", []string{"--duration", "10s", "--warmup", "10s"}, "--warmup"},
		{"batch over PDS's limit", []string{"--batch", "1001"}, "--batch"},
		{"no publisher", []string{"--publishers", "0"}, "--publishers"},
		{"pid without a name", []string{"--pid", "=12"}, "pid"},
		{"pid not a number", []string{"--pid", "dataplane=x"}, "pid"},
		{"centrifugo without its endpoints", []string{"--system", "centrifugo"}, "--centrifugo-api-url"},
		{"stray argument", []string{"route"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseFlags(%q) = %v, want an error naming %s", tt.args, err, tt.wantErr)
			}
		})
	}
}
