package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pds-platform/pds/common/telemetry"
)

func TestParseLevel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in        string
		want      slog.Level
		wantKnown bool
	}{
		{"", slog.LevelInfo, true},
		{"debug", slog.LevelDebug, true},
		{"INFO", slog.LevelInfo, true},
		{" warn ", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"verbose", slog.LevelInfo, false},
	}
	for _, tc := range cases {
		t.Run("level "+tc.in, func(t *testing.T) {
			t.Parallel()
			got, known := telemetry.ParseLevel(tc.in)
			if got != tc.want || known != tc.wantKnown {
				t.Fatalf("ParseLevel(%q) = %v, %v; want %v, %v", tc.in, got, known, tc.want, tc.wantKnown)
			}
		})
	}
}

func TestMetricsHandlerExposesInstrumentsAndRuntime(t *testing.T) {
	t.Setenv(telemetry.OTLPEndpointEnv, "") // no exporter: spans must still work without a collector
	ctx := context.Background()
	p, err := telemetry.Setup(ctx, "pds-test")
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	counter, err := p.Meter.Int64Counter("pds.test.events")
	if err != nil {
		t.Fatalf("counter: %v", err)
	}
	counter.Add(ctx, 3)
	_, span := p.Tracer.Start(ctx, "test-span")
	if !span.SpanContext().IsValid() {
		t.Fatalf("span has no valid trace context")
	}
	span.End()

	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"pds_test_events_total", `service_name="pds-test"`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics output lacks %q:\n%.2000s", want, body)
		}
	}
}
