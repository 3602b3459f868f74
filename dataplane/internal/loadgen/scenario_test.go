package loadgen

import (
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// Every scenario's events must be what PDS accepts, realistic in size, and carry in Event exactly the
// routing facts of their message (baselines route by Event, PDS by the message).
func TestScenarioEventsAreValidRealisticAndConsistent(t *testing.T) {
	t.Parallel()
	for _, name := range ScenarioNames() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sc := Scenarios[name]
			topology := sc.Topology(NewRunID())
			if e := routing.CheckTopicName("topic", topology.Topic); e != nil {
				t.Fatalf("topic name %q: %v", topology.Topic, e)
			}
			src := sc.Events(topology)
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			for seq := range uint64(2000) {
				ev := src.Event(seq, now)
				msg := proto.Clone(ev.Message).(*pdsv1.PortfolioDistribution)
				if err := routing.Normalize(msg, "event", now); err != nil {
					t.Fatalf("event %d fails PDS validation: %v", seq, err)
				}
				if !proto.Equal(msg, ev.Message) {
					t.Fatalf("event %d: PDS would fill in fields the load tool left out:\nsent   %v\nstored %v", seq, ev.Message, msg)
				}
				if size := proto.Size(msg); size < 300 || size > 500 {
					t.Errorf("event %d is %d bytes, want 300–500", seq, size)
				}
				r := msg.GetRouting()
				if ev.Topic != r.GetTopic() || ev.RoutingKey != r.GetRoutingKey() || !slices.Equal(ev.TargetWorkflows, r.GetTargetWorkflows()) ||
					ev.Priority != r.GetPriority() || ev.DataType != msg.GetDataType() {
					t.Fatalf("event %d: Event's routing facts %+v differ from its message's %v", seq, ev, msg)
				}
				if got, err := SeqFromEventID(msg.GetEventId()); err != nil || got != seq {
					t.Fatalf("event %d has event_id %q (seq %d, %v)", seq, msg.GetEventId(), got, err)
				}
			}
		})
	}
}

// Each scenario makes the deliveries per event the issue asks for.
func TestScenarioDeliveriesPerEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scenario   string
		streams    int
		minPerEv   int
		maxPerEv   int
		wantPerSub bool // every subscription receives some
	}{
		{scenario: "route", streams: 10, minPerEv: 1, maxPerEv: 1, wantPerSub: true},
		{scenario: "sustained", streams: 10, minPerEv: 1, maxPerEv: 1, wantPerSub: true},
		{scenario: "streams", streams: 108, minPerEv: 1, maxPerEv: 2, wantPerSub: true},
		{scenario: "fanout", streams: 100, minPerEv: 100, maxPerEv: 100, wantPerSub: true},
		{scenario: "slow", streams: 11, minPerEv: 1, maxPerEv: 2, wantPerSub: true},
		{scenario: "smoke", streams: 2, minPerEv: 0, maxPerEv: 2, wantPerSub: true},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			t.Parallel()
			sc := Scenarios[tt.scenario]
			topology := sc.Topology("t")
			streams := 0
			for _, s := range topology.Subscriptions {
				streams += s.Streams
			}
			if streams != tt.streams {
				t.Errorf("%d streams, want %d", streams, tt.streams)
			}
			src := sc.Events(topology)
			perSub := make([]int, len(topology.Subscriptions))
			for seq := range uint64(5000) {
				ev := src.Event(seq, time.Now())
				n := 0
				for i := range topology.Subscriptions {
					if topology.Subscriptions[i].Matches(&ev) {
						n++
						perSub[i]++
					}
				}
				if n < tt.minPerEv || n > tt.maxPerEv {
					t.Fatalf("event %d (targets %v, priority %d) reaches %d subscriptions, want %d to %d",
						seq, ev.TargetWorkflows, ev.Priority, n, tt.minPerEv, tt.maxPerEv)
				}
			}
			for i, n := range perSub {
				if tt.wantPerSub && n == 0 {
					t.Errorf("subscription %s receives none of 5000 events", topology.Subscriptions[i].Name)
				}
			}
		})
	}
}

func TestProcessMeterMeasuresThisProcess(t *testing.T) {
	t.Parallel()
	m := startMeter(map[string]int{"self": os.Getpid(), "gone": 1 << 30})
	start, err := cpuTicks(os.Getpid())
	if err != nil {
		t.Fatalf("read this process's CPU time: %v", err)
	}
	// Burn a few clock ticks of CPU so there is something to measure.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ticks, _ := cpuTicks(os.Getpid()); ticks > start+5 {
			break
		}
	}
	results := m.finish(1000)
	byName := map[string]ProcessResult{}
	for _, r := range results {
		byName[r.Name] = r
	}
	self := byName["self"]
	if self.Error != "" || self.CPUSeconds <= 0 || self.PeakRSSMiB <= 0 || self.CPUMicrosPerDelivery <= 0 {
		t.Errorf("self: %+v, want CPU time, per-delivery CPU and peak RSS", self)
	}
	if byName["gone"].Error == "" {
		t.Errorf("a process that does not exist is reported without an error: %+v", byName["gone"])
	}
	if ct := clockTicks(); ct <= 0 {
		t.Errorf("clock ticks %d", ct)
	}
}
