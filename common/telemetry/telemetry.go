// Package telemetry sets up PDS's observability: slog JSON logs, OpenTelemetry metrics exported for
// Prometheus scraping from a private registry, and OpenTelemetry traces exported over OTLP when configured.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// LogLevelEnv names the environment variable holding the log level: debug, info (default), warn or error.
const LogLevelEnv = "PDS_LOG_LEVEL"

// OTLPEndpointEnv is the standard OpenTelemetry variable; traces are exported only when it is set.
const OTLPEndpointEnv = "OTEL_EXPORTER_OTLP_ENDPOINT"

// NewLogger returns a JSON logger writing to stderr at the level named by PDS_LOG_LEVEL, with every record
// carrying the service name. An unknown level falls back to info and says so.
func NewLogger(service string) *slog.Logger {
	level, known := ParseLevel(os.Getenv(LogLevelEnv))
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", service)
	if !known {
		logger.Warn("unknown log level, using info", "env", LogLevelEnv, "value", os.Getenv(LogLevelEnv))
	}
	return logger
}

// ParseLevel maps debug, info, warn or error (any case) to a slog level; "" is info. known is false for
// anything else, which maps to info.
func ParseLevel(s string) (level slog.Level, known bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, true
	case "", "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	default:
		return slog.LevelInfo, false
	}
}

// Provider holds a service's meter and tracer providers. Setup installs them as the OpenTelemetry
// globals, so packages may use otel.Meter / otel.Tracer too.
type Provider struct {
	// Meter is the service's meter; its instruments appear on MetricsHandler.
	Meter metric.Meter
	// Tracer is the service's tracer.
	Tracer trace.Tracer

	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider
}

// Setup builds the providers for service. Metrics go to a private Prometheus registry (with Go runtime and
// process collectors) served by MetricsHandler; traces are batched to OTLP/HTTP only when
// OTEL_EXPORTER_OTLP_ENDPOINT is set (the exporter reads the other standard OTEL_* variables), otherwise
// spans are sampled for context propagation but not exported.
func Setup(ctx context.Context, service string) (*Provider, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("telemetry setup for %s: resource: %w", service, err)
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("telemetry setup for %s: prometheus exporter: %w", service, err)
	}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))

	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if os.Getenv(OTLPEndpointEnv) != "" {
		spans, err := otlptracehttp.New(ctx)
		if err != nil {
			_ = meters.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry setup for %s: otlp trace exporter: %w", service, err)
		}
		traceOpts = append(traceOpts, sdktrace.WithBatcher(spans))
	}
	tracers := sdktrace.NewTracerProvider(traceOpts...)

	otel.SetMeterProvider(meters)
	otel.SetTracerProvider(tracers)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	const scope = "github.com/pds-platform/pds"
	return &Provider{
		Meter:    meters.Meter(scope),
		Tracer:   tracers.Tracer(scope),
		registry: registry,
		meters:   meters,
		tracers:  tracers,
	}, nil
}

// MetricsHandler serves the Prometheus text exposition of the service's metrics.
func (p *Provider) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{Registry: p.registry})
}

// Shutdown flushes pending spans and stops the providers; ctx bounds the flush.
func (p *Provider) Shutdown(ctx context.Context) error {
	if err := errors.Join(p.tracers.Shutdown(ctx), p.meters.Shutdown(ctx)); err != nil {
		return fmt.Errorf("telemetry shutdown: %w", err)
	}
	return nil
}
