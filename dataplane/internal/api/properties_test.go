package api

import (
	"context"
	"testing"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestRecordPropertiesDescribeTheEventAndCarryTheTrace(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	ctx, span := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "publish")
	defer span.End()

	ev := &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_REBALANCING,
		Routing: &pdsv1.RoutingInfo{
			RoutingKey: "p1.rebalancing.update", Priority: 7, TargetWorkflows: []string{"ops", "risk,desk"},
		},
	}
	props := recordProperties(traceProperties(ctx), ev)
	want := map[string]string{
		PropertyDataType:        "REBALANCING",
		PropertyPriority:        "7",
		PropertyRoutingKey:      "p1.rebalancing.update",
		PropertyTargetWorkflows: `["ops","risk,desk"]`,
	}
	for k, v := range want {
		if props[k] != v {
			t.Errorf("property %q = %q, want %q", k, props[k], v)
		}
	}
	if tp := props["traceparent"]; len(tp) != 55 || tp[3:35] != span.SpanContext().TraceID().String() {
		t.Errorf("traceparent = %q, want the publish span's trace %s", tp, span.SpanContext().TraceID())
	}

	if _, ok := recordProperties(traceProperties(context.Background()), &pdsv1.PortfolioDistribution{})[PropertyTargetWorkflows]; ok {
		t.Error("an event for every workflow carries a target_workflows property; want none")
	}
}
