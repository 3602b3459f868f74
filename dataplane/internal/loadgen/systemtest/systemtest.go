// Package systemtest checks loadgen.System implementations against real servers: Check asserts that each
// subscription receives exactly the events it matches, and Throughput measures what a system reaches with
// one publisher. Every system's test drives the same bodies, so their results compare.
package systemtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Check publishes checkEvents events in batches of checkBatch from checkPublishers publishers at once.
const (
	checkEvents     = 200
	checkBatch      = 20
	checkPublishers = 2
)

// Topology is Check's topology: 2 partitions; subscription 0 takes workflow "wf-a" with 2 streams,
// subscription 1 takes workflow "wf-b" narrowed by a filter with 1 stream.
func Topology(runID string) loadgen.Topology {
	return loadgen.Topology{
		RunID:      runID,
		Topic:      "load/check",
		Partitions: 2,
		Subscriptions: []loadgen.SubscriptionSpec{
			{Name: "all-of-a", Workflow: "wf-a", Streams: 2, MaxInFlight: 100},
			{Name: "urgent-b", Workflow: "wf-b", Streams: 1, MaxInFlight: 100, Filter: &loadgen.Filter{
				DataTypes:   []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_PORTFOLIO_STATE, pdsv1.PortfolioDataType_RISK_BUDGET},
				MinPriority: 5,
				CEL:         `event.data_type in [PORTFOLIO_STATE, RISK_BUDGET] && event.routing.priority >= 5`,
			}},
		},
	}
}

// RunID returns a run id unique to this test run, for names that must not collide with other runs.
func RunID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

var targetCycle = [][]string{nil, {"wf-a"}, {"wf-b"}, {"wf-a", "wf-b"}, {"wf-c"}, {"wf-b", "wf-c"}}

// Event returns event seq of a varied stream: its target workflows, data type, priority and routing key
// cycle with different periods, and its message is a portfolio state of about 350 bytes encoded.
func Event(seq uint64, topic string) loadgen.Event {
	dataType := pdsv1.PortfolioDataType(seq%5 + 1)
	portfolio := fmt.Sprintf("PF-%05d", seq%97)
	routingKey := portfolio + "." + dataType.String()
	priority := int32(seq % 10)
	targets := targetCycle[seq%uint64(len(targetCycle))]
	positions := make([]*pdsv1.Position, 4)
	for i := range positions {
		positions[i] = &pdsv1.Position{
			InstrumentId: fmt.Sprintf("US%010d", int(seq%1000)*7+i),
			Quantity:     float64(100 + i*37),
			MarketValue:  float64(seq%5000) * 10.25,
			Weight:       0.25,
		}
	}
	msg := &pdsv1.PortfolioDistribution{
		EventId:   loadgen.EventIDFor(seq),
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
		DataType:  dataType,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        portfolio,
			TotalValue:         1_250_000.5 + float64(seq%1000),
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.0012, YtdReturn: 0.0734},
			Details: &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
				Currency: "USD", CashBalance: 25_000, Positions: positions,
			}},
		},
		Routing: &pdsv1.RoutingInfo{Topic: topic, RoutingKey: routingKey, TargetWorkflows: targets, Priority: priority},
	}
	return loadgen.Event{
		Seq: seq, Topic: topic, RoutingKey: routingKey, TargetWorkflows: targets,
		DataType: dataType, Priority: priority, Message: msg,
	}
}

// Options tune Check.
type Options struct {
	// AllowDuplicates accepts an event reaching a subscription more than once (systems that may redeliver);
	// duplicates are logged either way.
	AllowDuplicates bool
	// AfterCleanup checks that Cleanup left nothing behind; nil checks nothing more.
	AfterCleanup func(t *testing.T, topology loadgen.Topology)
}

// received records deliveries per subscription and stream.
type received struct {
	mu        sync.Mutex
	counts    []map[uint64]int // per subscription: seq -> deliveries
	perStream map[[2]int]int
	misfiled  []string // deliveries reported under another subscription or stream than their own
}

func (r *received) deliverer(sub, stream int) func(loadgen.Delivery) {
	return func(d loadgen.Delivery) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if d.Subscription != sub || d.Stream != stream || d.ReceivedAt.IsZero() {
			r.misfiled = append(r.misfiled, fmt.Sprintf("stream %d/%d reported %+v", sub, stream, d))
			return
		}
		r.counts[sub][d.Seq]++
		r.perStream[[2]int{sub, stream}]++
	}
}

// missing returns, per subscription, the expected seqs not received yet.
func (r *received) missing(expected [][]uint64) [][]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]uint64, len(expected))
	for sub, seqs := range expected {
		for _, seq := range seqs {
			if r.counts[sub][seq] == 0 {
				out[sub] = append(out[sub], seq)
			}
		}
	}
	return out
}

// Check prepares Topology, opens every stream concurrently (as the load tool does), publishes
// checkEvents events in batches from checkPublishers concurrent publishers and asserts that
// each subscription receives exactly the events its spec matches, then that Cleanup succeeds.
func Check(t *testing.T, sys loadgen.System, opts Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	topology := Topology(RunID("chk"))
	if err := sys.Prepare(ctx, topology); err != nil {
		t.Fatalf("%s: Prepare: %v", sys.Name(), err)
	}
	cleaned := false
	t.Cleanup(func() {
		if !cleaned {
			if err := sys.Cleanup(context.Background()); err != nil {
				t.Errorf("%s: Cleanup after a failed check: %v", sys.Name(), err)
			}
		}
	})

	rec := &received{perStream: map[[2]int]int{}}
	for range topology.Subscriptions {
		rec.counts = append(rec.counts, map[uint64]int{})
	}
	streams := openStreams(t, ctx, sys, topology, rec)
	closeStreams := func() {
		for _, s := range streams {
			if err := s.Close(); err != nil {
				t.Errorf("%s: close stream: %v", sys.Name(), err)
			}
		}
		streams = nil
	}
	t.Cleanup(closeStreams)

	expected := make([][]uint64, len(topology.Subscriptions))
	for seq := range uint64(checkEvents) {
		ev := Event(seq, topology.Topic)
		for sub := range topology.Subscriptions {
			if topology.Subscriptions[sub].Matches(&ev) {
				expected[sub] = append(expected[sub], seq)
			}
		}
	}
	publishConcurrently(t, ctx, sys, topology)
	for sub, seqs := range expected {
		if len(seqs) == 0 || len(seqs) == checkEvents {
			t.Fatalf("subscription %d matches %d of %d events: the check needs a filter that selects", sub, len(seqs), checkEvents)
		}
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := rec.missing(expected)
		if slices.IndexFunc(missing, func(m []uint64) bool { return len(m) > 0 }) < 0 {
			break
		}
		if time.Now().After(deadline) {
			for sub, m := range missing {
				if len(m) > 0 {
					t.Errorf("%s: subscription %d received %d of its %d events by the deadline; missing seqs %v",
						sys.Name(), sub, len(expected[sub])-len(m), len(expected[sub]), m)
				}
			}
			t.FailNow()
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an outcome
	}
	closeStreams()

	rec.mu.Lock()
	for _, m := range rec.misfiled {
		t.Errorf("%s: %s", sys.Name(), m)
	}
	for sub, counts := range rec.counts {
		want := map[uint64]bool{}
		for _, seq := range expected[sub] {
			want[seq] = true
		}
		duplicates := 0
		for seq, n := range counts {
			if !want[seq] {
				t.Errorf("%s: subscription %d received event %d, which it does not match", sys.Name(), sub, seq)
			}
			duplicates += n - 1
		}
		streamCounts := []int{}
		for stream := range topology.Subscriptions[sub].Streams {
			streamCounts = append(streamCounts, rec.perStream[[2]int{sub, stream}])
		}
		t.Logf("%s: subscription %d: %d events, %d duplicates, per stream %v", sys.Name(), sub, len(expected[sub]), duplicates, streamCounts)
		if duplicates > 0 && !opts.AllowDuplicates {
			t.Errorf("%s: subscription %d received %d duplicates", sys.Name(), sub, duplicates)
		}
	}
	rec.mu.Unlock()

	cleaned = true
	if err := sys.Cleanup(ctx); err != nil {
		t.Fatalf("%s: Cleanup: %v", sys.Name(), err)
	}
	if opts.AfterCleanup != nil {
		opts.AfterCleanup(t, topology)
	}
}

// openStreams opens every stream of topology at once, as the load tool does.
func openStreams(t *testing.T, ctx context.Context, sys loadgen.System, topology loadgen.Topology, rec *received) []loadgen.Stream {
	t.Helper()
	type opened struct {
		stream loadgen.Stream
		err    error
	}
	var results []chan opened
	for sub, spec := range topology.Subscriptions {
		for stream := range spec.Streams {
			ch := make(chan opened, 1)
			results = append(results, ch)
			go func() {
				s, err := sys.OpenStream(ctx, sub, stream, rec.deliverer(sub, stream))
				if err != nil {
					err = fmt.Errorf("%s: OpenStream(%d, %d): %w", sys.Name(), sub, stream, err)
				}
				ch <- opened{s, err}
			}()
		}
	}
	var streams []loadgen.Stream
	var failed bool
	for _, ch := range results {
		o := <-ch
		if o.err != nil {
			t.Error(o.err)
			failed = true
			continue
		}
		streams = append(streams, o.stream)
	}
	if failed {
		for _, s := range streams {
			_ = s.Close()
		}
		t.FailNow()
	}
	return streams
}

// publishConcurrently publishes events 0..checkEvents-1: publisher i sends batches i, i+checkPublishers, …
func publishConcurrently(t *testing.T, ctx context.Context, sys loadgen.System, topology loadgen.Topology) {
	t.Helper()
	errs := make(chan error, checkPublishers)
	for i := range checkPublishers {
		go func() {
			errs <- func() error {
				pub, err := sys.NewPublisher(ctx)
				if err != nil {
					return fmt.Errorf("%s: NewPublisher: %w", sys.Name(), err)
				}
				for first := uint64(i * checkBatch); first < checkEvents; first += checkPublishers * checkBatch {
					events := make([]loadgen.Event, 0, checkBatch)
					for seq := first; seq < min(first+checkBatch, checkEvents); seq++ {
						events = append(events, Event(seq, topology.Topic))
					}
					if err := pub.Publish(ctx, events); err != nil {
						_ = pub.Close()
						return fmt.Errorf("%s: Publish events %d..%d: %w", sys.Name(), first, first+uint64(len(events))-1, err)
					}
				}
				if err := pub.Close(); err != nil {
					return fmt.Errorf("%s: close publisher: %w", sys.Name(), err)
				}
				return nil
			}()
		}()
	}
	for range checkPublishers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
