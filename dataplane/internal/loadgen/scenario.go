package loadgen

import (
	"fmt"
	"slices"
	"strings"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/eventgen"
)

// Scenario is a benchmark's shape: the topology it sets up and the events it publishes.
type Scenario struct {
	Name        string
	Description string
	topology    func() Topology
	// route gives event seq its target workflows and priority; the returned slice is shared, read-only.
	route func(seq uint64) (targets []string, priority int32)
}

// scenarioDataType is the data type of every scenario's topic. A PDS topic carries one data type, so a run on
// one topic publishes one; portfolio state is the most common event.
const scenarioDataType = pdsv1.PortfolioDataType_PORTFOLIO_STATE

// Payload pool: the events of a run carry the data of a pool of realistic events, so that generating 100K
// events/s costs the load tool little. poolPortfolios portfolios spread the routing keys over the partitions.
const (
	poolPortfolios = 1000
	poolSize       = 5 * poolPortfolios
	poolSeed       = 20250621
)

// Scenarios are the benchmark scenarios by name.
var Scenarios = map[string]Scenario{
	"route":     routeScenario("route", "(a) 16 partitions, 10 subscriptions of one stream; each event targets one of them"),
	"streams":   streamsScenario(),
	"fanout":    fanoutScenario(),
	"slow":      slowScenario(),
	"sustained": routeScenario("sustained", "(e) scenario route for a long run (bench.sh: 10 minutes) with zero loss"),
	"smoke":     smokeScenario(),
}

// ScenarioNames lists Scenarios' names, sorted.
func ScenarioNames() []string {
	names := make([]string, 0, len(Scenarios))
	for name := range Scenarios {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Topology returns what the scenario sets up for run runID: its topic is named after the run, so runs never
// share a topic; subscription names are the scenario's (systems prefix them with the RunID).
func (s Scenario) Topology(runID string) Topology {
	t := s.topology()
	t.RunID = runID
	t.Topic = "load-" + s.Name + "-" + runID
	t.DataType = scenarioDataType
	return t
}

// EventSource makes a run's events. Event is safe for concurrent use.
type EventSource struct {
	topic    string
	dataType pdsv1.PortfolioDataType
	route    func(seq uint64) ([]string, int32)
	data     []*pdsv1.PortfolioData
	keys     []string
}

// Events returns the source of the events the scenario publishes on topology.
func (s Scenario) Events(topology Topology) *EventSource {
	gen := eventgen.New(eventgen.Options{
		Portfolios: poolPortfolios,
		Seed:       poolSeed,
		DataTypes:  []pdsv1.PortfolioDataType{topology.DataType},
	})
	src := &EventSource{topic: topology.Topic, dataType: topology.DataType, route: s.route}
	for range poolSize {
		ev := gen.Next()
		src.data = append(src.data, ev.GetData())
		src.keys = append(src.keys, routing.DefaultRoutingKey(ev.GetData().GetPortfolioId(), topology.DataType))
	}
	return src
}

// Event returns event seq, stamped with the time it is due. Its routing facts equal its message's.
func (src *EventSource) Event(seq uint64, due time.Time) Event {
	i := seq % poolSize
	targets, priority := src.route(seq)
	return Event{
		Seq:             seq,
		Topic:           src.topic,
		RoutingKey:      src.keys[i],
		TargetWorkflows: targets,
		DataType:        src.dataType,
		Priority:        priority,
		Message: &pdsv1.PortfolioDistribution{
			EventId:   EventIDFor(seq),
			Timestamp: routing.FormatTimestamp(due),
			DataType:  src.dataType,
			Data:      src.data[i],
			Routing: &pdsv1.RoutingInfo{
				Topic:           src.topic,
				RoutingKey:      src.keys[i],
				TargetWorkflows: targets,
				Priority:        priority,
			},
		},
	}
}

// workflowNames returns n workflow names wf-00, wf-01, … (three digits from 100 on).
func workflowNames(n int) []string {
	width := len(fmt.Sprint(n - 1))
	width = max(width, 2)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("wf-%0*d", width, i)
	}
	return names
}

// singles returns one single-element slice per name, built once so events can share them.
func singles(names []string) [][]string {
	out := make([][]string, len(names))
	for i, n := range names {
		out[i] = []string{n}
	}
	return out
}

// mix spreads seq over a 64-bit value (splitmix64), so routing decisions look random yet are repeatable.
func mix(seq uint64) uint64 {
	z := seq + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

const defaultPriority = 3

func routeTopology(workflows []string) Topology {
	t := Topology{Partitions: 16}
	for _, wf := range workflows {
		t.Subscriptions = append(t.Subscriptions, SubscriptionSpec{Name: wf, Workflow: wf, Streams: 1})
	}
	return t
}

// routeScenario: each event targets one of 10 workflows in turn, so every event has exactly one delivery.
func routeScenario(name, description string) Scenario {
	workflows := workflowNames(10)
	targets := singles(workflows)
	return Scenario{
		Name:        name,
		Description: description,
		topology:    func() Topology { return routeTopology(workflows) },
		route: func(seq uint64) ([]string, int32) {
			return targets[seq%uint64(len(targets))], defaultPriority
		},
	}
}

// streamsScenario: 12 subscriptions × 9 streams = 108 concurrent streams. The streams of a subscription share
// its load (Key_Shared): a broker's read cost grows with subscriptions, not streams, so many streams on a
// few subscriptions is how 100+ subscribers are served. Every other subscription has a filter (PDS's native
// data_types and min_priority, so no CEL is needed); each event targets one or two workflows among those
// whose filter accepts it.
func streamsScenario() Scenario {
	const subscriptions, streamsPer = 12, 9
	workflows := workflowNames(subscriptions)
	filters := []*Filter{
		1:  {MinPriority: 3},
		3:  {DataTypes: []pdsv1.PortfolioDataType{scenarioDataType, pdsv1.PortfolioDataType_RISK_BUDGET}},
		5:  {DataTypes: []pdsv1.PortfolioDataType{scenarioDataType}, MinPriority: 5},
		7:  {MinPriority: 7},
		9:  {MinPriority: 2},
		11: {DataTypes: []pdsv1.PortfolioDataType{scenarioDataType}, MinPriority: 4},
	}
	topology := Topology{Partitions: 16}
	for i, wf := range workflows {
		spec := SubscriptionSpec{Name: wf, Workflow: wf, Streams: streamsPer}
		if i < len(filters) {
			spec.Filter = filters[i]
		}
		topology.Subscriptions = append(topology.Subscriptions, spec)
	}
	// Per priority, the target lists to choose from: every eligible workflow alone and every pair of them.
	var onePerPriority, twoPerPriority [routing.MaxPriority + 1][][]string
	for prio := range int32(routing.MaxPriority + 1) {
		probe := Event{DataType: scenarioDataType, Priority: prio}
		var eligible []string
		for i := range topology.Subscriptions {
			if topology.Subscriptions[i].Matches(&probe) {
				eligible = append(eligible, workflows[i])
			}
		}
		onePerPriority[prio] = singles(eligible)
		for a := range eligible {
			for b := a + 1; b < len(eligible); b++ {
				twoPerPriority[prio] = append(twoPerPriority[prio], []string{eligible[a], eligible[b]})
			}
		}
	}
	return Scenario{
		Name:        "streams",
		Description: "(b) 16 partitions, 12 subscriptions × 9 streams = 108 streams, half filtered; each event targets 1 or 2 workflows",
		topology:    func() Topology { return cloneTopology(topology) },
		route: func(seq uint64) ([]string, int32) {
			h := mix(seq)
			prio := int32(h % (routing.MaxPriority + 1))
			choices := onePerPriority[prio]
			if (h>>8)%2 == 1 {
				choices = twoPerPriority[prio]
			}
			return choices[(h>>16)%uint64(len(choices))], prio
		},
	}
}

// fanoutScenario: 100 subscriptions of one stream; events name no target workflow, so each reaches all 100.
func fanoutScenario() Scenario {
	workflows := workflowNames(100)
	return Scenario{
		Name:        "fanout",
		Description: "(c) 16 partitions, 100 subscriptions of one stream; every event reaches all of them",
		topology:    func() Topology { return routeTopology(workflows) },
		route:       func(uint64) ([]string, int32) { return nil, defaultPriority },
	}
}

// Scenario slow's slow subscriber: it spends slowProcessing on each event, one at a time, with few events in
// flight, and one event in slowShare also goes to it: far more than it can take at benchmark rates, so it
// falls behind for the whole run, as a stuck consumer does.
const (
	slowWorkflow    = "wf-slow"
	slowProcessing  = 5 * time.Millisecond
	slowMaxInFlight = 10
	slowShare       = 10
)

// slowScenario is scenario route plus the slow subscriber. The fast subscriptions get exactly route's load,
// so their latency can be compared with route's at the same rate.
func slowScenario() Scenario {
	workflows := workflowNames(10)
	fast := singles(workflows)
	withSlow := make([][]string, len(workflows))
	for i, wf := range workflows {
		withSlow[i] = []string{wf, slowWorkflow}
	}
	return Scenario{
		Name:        "slow",
		Description: "(d) scenario route plus a slow subscriber (5 ms per event, 10 in flight) that one event in 10 also targets",
		topology: func() Topology {
			t := routeTopology(workflows)
			t.Subscriptions = append(t.Subscriptions, SubscriptionSpec{
				Name: slowWorkflow, Workflow: slowWorkflow, Streams: 1,
				MaxInFlight: slowMaxInFlight, ProcessingDelay: slowProcessing,
			})
			return t
		},
		route: func(seq uint64) ([]string, int32) {
			i := seq % uint64(len(workflows))
			if (seq/uint64(len(workflows)))%slowShare == 0 {
				return withSlow[i], defaultPriority
			}
			return fast[i], defaultPriority
		},
	}
}

// smokeScenario is small enough for tests: 2 partitions, an unfiltered and a filtered subscription; a third
// of the events target both, a third each one.
func smokeScenario() Scenario {
	a, b := []string{"wf-a"}, []string{"wf-b"}
	return Scenario{
		Name:        "smoke",
		Description: "2 partitions, 2 subscriptions (one filtered by min priority 5), for tests",
		topology: func() Topology {
			return Topology{Partitions: 2, Subscriptions: []SubscriptionSpec{
				{Name: "wf-a", Workflow: "wf-a", Streams: 1},
				{Name: "wf-b", Workflow: "wf-b", Streams: 1, Filter: &Filter{MinPriority: 5}},
			}}
		},
		route: func(seq uint64) ([]string, int32) {
			prio := int32(seq % (routing.MaxPriority + 1))
			switch seq % 3 {
			case 0:
				return nil, prio
			case 1:
				return a, prio
			default:
				return b, prio
			}
		},
	}
}

func cloneTopology(t Topology) Topology {
	t.Subscriptions = slices.Clone(t.Subscriptions)
	return t
}

// describe is a one-line summary of a topology, for progress output.
func describe(t Topology) string {
	streams := 0
	for _, s := range t.Subscriptions {
		streams += max(s.Streams, 1)
	}
	return strings.Join([]string{
		fmt.Sprintf("topic %s", t.Topic),
		fmt.Sprintf("%d partitions", t.Partitions),
		fmt.Sprintf("%d subscriptions", len(t.Subscriptions)),
		fmt.Sprintf("%d streams", streams),
	}, ", ")
}
