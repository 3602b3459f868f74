package api

import (
	"context"
	"encoding/json"
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

// recordProperties describes a normalized event for the broker. The trace context of the Publish call
// (W3C traceparent, and baggage when present) travels with each event.
func recordProperties(ctx context.Context, ev *pdsv1.PortfolioDistribution) map[string]string {
	props := make(map[string]string, 6)
	props[PropertyDataType] = ev.GetDataType().String()
	props[PropertyPriority] = strconv.Itoa(int(ev.GetRouting().GetPriority()))
	props[PropertyRoutingKey] = ev.GetRouting().GetRoutingKey()
	if targets := ev.GetRouting().GetTargetWorkflows(); len(targets) > 0 {
		// A JSON array: workflow names may hold commas.
		if encoded, err := json.Marshal(targets); err == nil {
			props[PropertyTargetWorkflows] = string(encoded)
		}
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(props))
	return props
}
