package api

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the API's instruments; outcome attributes carry Connect code names ("ok" on success).
type metrics struct {
	publishedEvents metric.Int64Counter
	publishDuration metric.Float64Histogram
	latestFailures  metric.Int64Counter
	streamsActive   metric.Int64UpDownCounter
	streamedEvents  metric.Int64Counter
	restRequests    metric.Int64Counter
}

func newMetrics(meter metric.Meter) (*metrics, error) {
	var m metrics
	var err error
	if m.publishedEvents, err = meter.Int64Counter("pds.publish.events",
		metric.WithDescription("Events in Publish requests, by outcome."), metric.WithUnit("{event}")); err != nil {
		return nil, fmt.Errorf("create publish events counter: %w", err)
	}
	if m.publishDuration, err = meter.Float64Histogram("pds.publish.duration",
		metric.WithDescription("Time to validate and durably store one Publish batch."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)); err != nil {
		return nil, fmt.Errorf("create publish duration histogram: %w", err)
	}
	if m.latestFailures, err = meter.Int64Counter("pds.latest_view.failures",
		metric.WithDescription("Published batches whose latest-state view update failed.")); err != nil {
		return nil, fmt.Errorf("create latest view failure counter: %w", err)
	}
	if m.streamsActive, err = meter.Int64UpDownCounter("pds.streams.active",
		metric.WithDescription("Open subscriber streams, by transport."), metric.WithUnit("{stream}")); err != nil {
		return nil, fmt.Errorf("create active streams gauge: %w", err)
	}
	if m.streamedEvents, err = meter.Int64Counter("pds.stream.sent_events",
		metric.WithDescription("Events sent to subscriber streams, by transport."), metric.WithUnit("{event}")); err != nil {
		return nil, fmt.Errorf("create streamed events counter: %w", err)
	}
	if m.restRequests, err = meter.Int64Counter("pds.rest.requests",
		metric.WithDescription("REST latest-view requests, by view and HTTP status.")); err != nil {
		return nil, fmt.Errorf("create REST request counter: %w", err)
	}
	return &m, nil
}

// The attribute sets recorded once per stream message or Publish call are built once: building one
// sorts and allocates.
var (
	outcomeOK          = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "ok")))
	transportConnect   = metric.WithAttributeSet(attribute.NewSet(attribute.String("transport", "connect")))
	transportWebSocket = metric.WithAttributeSet(attribute.NewSet(attribute.String("transport", "websocket")))
)

func outcome(err error) metric.MeasurementOption {
	if err == nil {
		return outcomeOK
	}
	return metric.WithAttributes(attribute.String("outcome", connect.CodeOf(err).String()))
}

func (m *metrics) recordPublish(ctx context.Context, events int, elapsed time.Duration, err error) {
	attrs := outcome(err)
	m.publishedEvents.Add(ctx, int64(events), attrs)
	m.publishDuration.Record(ctx, elapsed.Seconds(), attrs)
}
