package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/pds-platform/pds/common/freeport"
)

func TestPprofAddrFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "off by default"},
		{name: "from the flag", args: []string{"--pprof-addr", "127.0.0.1:6060"}, want: "127.0.0.1:6060"},
		{name: "from the environment", env: map[string]string{"PDS_PPROF_ADDR": "127.0.0.1:6061"}, want: "127.0.0.1:6061"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string { return tt.env[k] }
			var process processConfig
			if _, err := parseConfig(tt.args, getenv, process.register(getenv)); err != nil {
				t.Fatalf("parse %v: %v", tt.args, err)
			}
			if process.pprofAddr != tt.want {
				t.Fatalf("pprof addr %q, want %q", process.pprofAddr, tt.want)
			}
		})
	}
}

// The profiling endpoints answer on their own listener and stop with the context.
func TestServePprofServesProfilesUntilStopped(t *testing.T) {
	t.Parallel()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := servePprof(ctx, addr, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("serve pprof: %v", err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("GET goroutine profile: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("goroutine profile: HTTP %d, %d bytes", resp.StatusCode, len(body))
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := client.Get("http://" + addr + "/debug/pprof/"); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pprof still answers after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
