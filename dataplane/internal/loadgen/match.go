package loadgen

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// eventIDPrefix marks event ids made by the load tool; the digits after it are the event's Seq.
const eventIDPrefix = "load-"

// EventIDFor is the event_id the load tool gives event seq.
func EventIDFor(seq uint64) string {
	return eventIDPrefix + strconv.FormatUint(seq, 10)
}

// SeqFromEventID recovers the Seq that EventIDFor put into an event_id.
func SeqFromEventID(id string) (uint64, error) {
	digits, ok := strings.CutPrefix(id, eventIDPrefix)
	if !ok {
		return 0, fmt.Errorf("event_id %q was not made by the load tool (want %q followed by digits)", id, eventIDPrefix)
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("event_id %q: %w", id, err)
	}
	return seq, nil
}

// Matches reports whether ev must reach spec's subscription: the workflow first (an event with no
// target_workflows goes to every workflow), then the filter. It is the harness's truth for loss and the
// client-side filter of systems that have no server-side one.
func (spec *SubscriptionSpec) Matches(ev *Event) bool {
	if len(ev.TargetWorkflows) > 0 && !slices.Contains(ev.TargetWorkflows, spec.Workflow) {
		return false
	}
	f := spec.Filter
	if f == nil {
		return true
	}
	if len(f.DataTypes) > 0 && !slices.Contains(f.DataTypes, ev.DataType) {
		return false
	}
	return ev.Priority >= f.MinPriority
}

// Process spends the subscription's ProcessingDelay on one event, as its subscriber would; false means ctx
// ended meanwhile.
func (spec *SubscriptionSpec) Process(ctx context.Context) bool {
	if spec.ProcessingDelay <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(spec.ProcessingDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
