package main

import (
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, httpAddr, cpURL string, ack time.Duration, maxInFlight int)
		wantErr bool
	}{
		{name: "defaults", check: func(t *testing.T, httpAddr, cpURL string, ack time.Duration, maxInFlight int) {
			if httpAddr != "127.0.0.1:8081" || cpURL != "http://127.0.0.1:8080" || ack != 30*time.Second || maxInFlight != 1000 {
				t.Fatalf("defaults %s %s %s %d", httpAddr, cpURL, ack, maxInFlight)
			}
		}},
		{name: "environment", env: map[string]string{"PDS_HTTP_ADDR": "0.0.0.0:9000", "PDS_ACK_DEADLINE": "5s", "PDS_MAX_IN_FLIGHT": "50"},
			check: func(t *testing.T, httpAddr, _ string, ack time.Duration, maxInFlight int) {
				if httpAddr != "0.0.0.0:9000" || ack != 5*time.Second || maxInFlight != 50 {
					t.Fatalf("from env: %s %s %d", httpAddr, ack, maxInFlight)
				}
			}},
		{name: "flag beats environment", args: []string{"--http-addr", "127.0.0.1:1"}, env: map[string]string{"PDS_HTTP_ADDR": "127.0.0.1:2"},
			check: func(t *testing.T, httpAddr, _ string, _ time.Duration, _ int) {
				if httpAddr != "127.0.0.1:1" {
					t.Fatalf("http addr %s, want the flag's", httpAddr)
				}
			}},
		{name: "bad ack deadline in env", env: map[string]string{"PDS_ACK_DEADLINE": "soon"}, wantErr: true},
		{name: "max in flight over the limit", args: []string{"--max-in-flight", "10001"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tt.args, env(tt.env))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", cfg)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tt.check(t, cfg.HTTPAddr, cfg.ControlPlaneURL, cfg.AckDeadline, cfg.MaxInFlight)
		})
	}
}
