package api

import (
	"context"
	"encoding/json"
	"maps"
	"strconv"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// Names of the record properties the publish path sets, so the broker and direct Pulsar consumers can
// route and filter without decoding the payload. The driver adds "event_id".
const (
	PropertyDataType        = "data_type"
	PropertyPriority        = "priority"
	PropertyTargetWorkflows = "target_workflows"
	PropertyRoutingKey      = "routing_key"
)

// traceProperties carries the trace context of a Publish call (W3C traceparent, and baggage when present);
// it is taken once per call and shared by every event of it.
func traceProperties(ctx context.Context) map[string]string {
	props := map[string]string{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(props))
	return props
}

// recordProperties describes a normalized event for the broker, with the call's trace properties.
func recordProperties(trace map[string]string, ev *pdsv1.PortfolioDistribution) map[string]string {
	props := make(map[string]string, 4+len(trace))
	maps.Copy(props, trace)
	props[PropertyDataType] = ev.GetDataType().String()
	props[PropertyPriority] = strconv.Itoa(int(ev.GetRouting().GetPriority()))
	props[PropertyRoutingKey] = ev.GetRouting().GetRoutingKey()
	if targets := ev.GetRouting().GetTargetWorkflows(); len(targets) > 0 {
		// A JSON array: workflow names may hold commas.
		if encoded, err := json.Marshal(targets); err == nil {
			props[PropertyTargetWorkflows] = string(encoded)
		}
	}
	return props
}
