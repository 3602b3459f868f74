package pulsarsetup

import (
	"encoding/json"
	"fmt"
	"strconv"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"

	"github.com/pds-platform/pds/dataplane/internal/api"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Properties are the message properties PDS's publish path and Pulsar driver give ev (event_id,
// data_type, priority, routing_key and target_workflows as a JSON array), without the trace context.
func Properties(ev *loadgen.Event) map[string]string {
	props := make(map[string]string, 5)
	props[broker.PropertyEventID] = loadgen.EventIDFor(ev.Seq)
	props[api.PropertyDataType] = ev.DataType.String()
	props[api.PropertyPriority] = strconv.Itoa(int(ev.Priority))
	props[api.PropertyRoutingKey] = ev.RoutingKey
	if len(ev.TargetWorkflows) > 0 {
		// A JSON array, as PDS writes it: workflow names may hold commas.
		if encoded, err := json.Marshal(ev.TargetWorkflows); err == nil {
			props[api.PropertyTargetWorkflows] = string(encoded)
		}
	}
	return props
}

// EventFromProperties rebuilds what a subscription's filter looks at (Seq, routing key, target workflows,
// data type, priority) from message properties written by Properties or by PDS; Message stays nil.
func EventFromProperties(props map[string]string) (loadgen.Event, error) {
	var ev loadgen.Event
	seq, err := loadgen.SeqFromEventID(props[broker.PropertyEventID])
	if err != nil {
		return ev, err
	}
	ev.Seq = seq
	ev.RoutingKey = props[api.PropertyRoutingKey]
	if name, ok := props[api.PropertyDataType]; ok {
		v, known := pdsv1.PortfolioDataType_value[name]
		if !known {
			return ev, fmt.Errorf("event %d: unknown %s %q", seq, api.PropertyDataType, name)
		}
		ev.DataType = pdsv1.PortfolioDataType(v)
	}
	if p, ok := props[api.PropertyPriority]; ok {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return ev, fmt.Errorf("event %d: %s: %w", seq, api.PropertyPriority, err)
		}
		ev.Priority = int32(n)
	}
	if targets, ok := props[api.PropertyTargetWorkflows]; ok {
		if err := json.Unmarshal([]byte(targets), &ev.TargetWorkflows); err != nil {
			return ev, fmt.Errorf("event %d: %s: %w", seq, api.PropertyTargetWorkflows, err)
		}
	}
	return ev, nil
}
