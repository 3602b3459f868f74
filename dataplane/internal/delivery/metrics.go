package delivery

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Reasons an event the broker delivered is not handed to the stream (attribute "reason").
const (
	reasonWorkflow    = "target_workflows"
	reasonFilter      = "filters"
	reasonUndecodable = "undecodable"
)

type metrics struct {
	delivered   metric.Int64Counter
	acked       metric.Int64Counter
	redelivered metric.Int64Counter
	filtered    metric.Int64Counter
	inFlight    metric.Int64UpDownCounter
}

func newMetrics(meter metric.Meter) (*metrics, error) {
	var m metrics
	var err error
	if m.delivered, err = meter.Int64Counter("pds.delivery.delivered",
		metric.WithUnit("{event}"), metric.WithDescription("Events handed to subscriber streams.")); err != nil {
		return nil, fmt.Errorf("create delivered counter: %w", err)
	}
	if m.acked, err = meter.Int64Counter("pds.delivery.acked",
		metric.WithUnit("{event}"), metric.WithDescription("Delivered events acknowledged at the broker, by the subscriber or by auto-ack.")); err != nil {
		return nil, fmt.Errorf("create acked counter: %w", err)
	}
	if m.redelivered, err = meter.Int64Counter("pds.delivery.redelivered",
		metric.WithUnit("{event}"), metric.WithDescription("Events handed to streams on a second or later delivery attempt.")); err != nil {
		return nil, fmt.Errorf("create redelivered counter: %w", err)
	}
	if m.filtered, err = meter.Int64Counter("pds.delivery.filtered_out",
		metric.WithUnit("{event}"), metric.WithDescription("Events a subscription did not accept, acknowledged without delivery, by reason.")); err != nil {
		return nil, fmt.Errorf("create filtered-out counter: %w", err)
	}
	if m.inFlight, err = meter.Int64UpDownCounter("pds.delivery.in_flight",
		metric.WithUnit("{event}"), metric.WithDescription("Events handed to streams and not yet acknowledged.")); err != nil {
		return nil, fmt.Errorf("create in-flight gauge: %w", err)
	}
	return &m, nil
}

// sessionMetrics records with a session's attributes, built once so recording does not allocate.
type sessionMetrics struct {
	m                                       *metrics
	attrs                                   metric.MeasurementOption
	workflowAttrs, filterAttrs, undecodable metric.MeasurementOption
}

func (m *metrics) forSession(tenantID, subscriptionID string) sessionMetrics {
	base := []attribute.KeyValue{
		attribute.String("tenant_id", tenantID),
		attribute.String("subscription_id", subscriptionID),
	}
	withReason := func(reason string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(base[:len(base):len(base)], attribute.String("reason", reason))...))
	}
	return sessionMetrics{
		m:             m,
		attrs:         metric.WithAttributeSet(attribute.NewSet(base...)),
		workflowAttrs: withReason(reasonWorkflow),
		filterAttrs:   withReason(reasonFilter),
		undecodable:   withReason(reasonUndecodable),
	}
}

func (s sessionMetrics) delivered(n int64) {
	if n > 0 {
		s.m.delivered.Add(context.Background(), n, s.attrs)
	}
}

func (s sessionMetrics) acked(n int64) {
	if n > 0 {
		s.m.acked.Add(context.Background(), n, s.attrs)
	}
}

func (s sessionMetrics) redelivered(n int64) {
	if n > 0 {
		s.m.redelivered.Add(context.Background(), n, s.attrs)
	}
}

func (s sessionMetrics) inFlightDelta(n int64) {
	if n != 0 {
		s.m.inFlight.Add(context.Background(), n, s.attrs)
	}
}

func (s sessionMetrics) filtered(reason string, n int64) {
	if n == 0 {
		return
	}
	opt := s.undecodable
	switch reason {
	case reasonWorkflow:
		opt = s.workflowAttrs
	case reasonFilter:
		opt = s.filterAttrs
	}
	s.m.filtered.Add(context.Background(), n, opt)
}
