package systemtest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Shape of Throughput's load: one publisher, throughputCallers Publish calls in flight on it, each of
// throughputBatch events, into throughputPartitions partitions read by one subscription of
// throughputStreams streams that matches every event.
const (
	throughputPartitions = 16
	throughputStreams    = 2
	throughputCallers    = 4
	throughputBatch      = 250
)

// Throughput publishes b.N events as fast as one publisher accepts them (closed loop) and waits until
// every one has arrived. It reports events/s (published and delivered, end to end) and the p50/p99/max
// of publish→receive latency, counted from the start of the Publish call that carried the event. Run it
// with a fixed count, e.g. -benchtime=200000x: each run prepares and cleans up its own topology.
func Throughput(b *testing.B, sys loadgen.System) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	topology := loadgen.Topology{
		RunID:      RunID("tput"),
		Topic:      "load/throughput",
		Partitions: throughputPartitions,
		Subscriptions: []loadgen.SubscriptionSpec{
			{Name: "everything", Workflow: "wf-a", Streams: throughputStreams, MaxInFlight: 1000},
		},
	}
	if err := sys.Prepare(ctx, topology); err != nil {
		b.Fatalf("%s: Prepare: %v", sys.Name(), err)
	}
	defer func() {
		if err := sys.Cleanup(context.Background()); err != nil {
			b.Errorf("%s: Cleanup: %v", sys.Name(), err)
		}
	}()

	n := b.N
	sentAt := make([]atomic.Int64, n) // unix nanos of the Publish call carrying each seq
	// Per stream, each under its own lock: a system may call deliver from several goroutines.
	latencies := make([][]time.Duration, throughputStreams)
	locks := make([]sync.Mutex, throughputStreams)
	var arrived atomic.Int64
	var duplicates atomic.Int64
	seen := make([]atomic.Bool, n)
	all := make(chan struct{})
	var closeAll sync.Once
	for stream := range throughputStreams {
		s, err := sys.OpenStream(ctx, 0, stream, func(d loadgen.Delivery) {
			if d.Seq >= uint64(n) {
				return
			}
			if seen[d.Seq].Swap(true) {
				duplicates.Add(1)
				return
			}
			locks[stream].Lock()
			latencies[stream] = append(latencies[stream], d.ReceivedAt.Sub(time.Unix(0, sentAt[d.Seq].Load())))
			locks[stream].Unlock()
			if arrived.Add(1) == int64(n) {
				closeAll.Do(func() { close(all) })
			}
		})
		if err != nil {
			b.Fatalf("%s: OpenStream: %v", sys.Name(), err)
		}
		defer s.Close()
	}
	pub, err := sys.NewPublisher(ctx)
	if err != nil {
		b.Fatalf("%s: NewPublisher: %v", sys.Name(), err)
	}
	defer pub.Close()

	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range throughputCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			events := make([]loadgen.Event, 0, throughputBatch)
			for {
				first := next.Add(throughputBatch) - throughputBatch
				if first >= int64(n) {
					return
				}
				events = events[:0]
				for seq := first; seq < min(first+throughputBatch, int64(n)); seq++ {
					ev := Event(uint64(seq), topology.Topic)
					ev.TargetWorkflows = nil // every event matches
					ev.Message.Routing.TargetWorkflows = nil
					events = append(events, ev)
				}
				now := time.Now().UnixNano()
				for _, ev := range events {
					sentAt[ev.Seq].Store(now)
				}
				if err := pub.Publish(ctx, events); err != nil {
					b.Errorf("%s: Publish: %v", sys.Name(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	published := time.Since(start)
	select {
	case <-all:
	case <-ctx.Done():
		b.Fatalf("%s: %d of %d events arrived before the deadline", sys.Name(), arrived.Load(), n)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	for i := range locks {
		locks[i].Lock() // late duplicates may still be arriving
		defer locks[i].Unlock()
	}
	merged := slices.Concat(latencies...)
	slices.Sort(merged)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(float64(n)/published.Seconds(), "published/s")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "delivered/s")
	if len(merged) > 0 {
		b.ReportMetric(ms(merged[len(merged)/2]), "p50-ms")
		b.ReportMetric(ms(merged[len(merged)*99/100]), "p99-ms")
		b.ReportMetric(ms(merged[len(merged)-1]), "max-ms")
	}
	b.ReportMetric(float64(duplicates.Load()), "duplicates")
	b.ReportMetric(0, "ns/op") // hide: one op is one event, reported above as rates
}
