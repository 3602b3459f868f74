package loadgen

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSystem is a System test double that delivers synchronously inside Publish and misbehaves on purpose
// (drops, duplicates, stalls, failures), so the harness's bookkeeping can be checked against known answers.
// It tests the harness, not any real system.
type fakeSystem struct {
	// drop reports whether subscription sub never receives seq.
	drop func(sub int, seq uint64) bool
	// duplicate reports whether subscription sub receives seq twice (on two streams when it has them).
	duplicate func(sub int, seq uint64) bool
	// stall is how long Publish call number call (from 1) blocks before it stores anything.
	stall func(call int64) time.Duration
	// fail makes Publish call number call fail; deliverAnyway delivers its events all the same (as a system
	// does when the answer, not the write, was lost).
	fail func(call int64) (err error, deliverAnyway bool)

	topology Topology
	mu       sync.Mutex
	streams  map[int][]func(Delivery)
	calls    atomic.Int64
	cleaned  atomic.Bool
}

func (f *fakeSystem) Name() string { return "fake" }

func (f *fakeSystem) Prepare(_ context.Context, t Topology) error {
	f.topology = t
	f.streams = map[int][]func(Delivery){}
	return nil
}

func (f *fakeSystem) OpenStream(_ context.Context, sub, stream int, deliver func(Delivery)) (Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.streams[sub]) <= stream {
		f.streams[sub] = append(f.streams[sub], nil)
	}
	f.streams[sub][stream] = deliver
	return closer{}, nil
}

func (f *fakeSystem) NewPublisher(context.Context) (Publisher, error) { return fakePublisher{f}, nil }
func (f *fakeSystem) Processes() map[string]int                       { return nil }
func (f *fakeSystem) Cleanup(context.Context) error                   { f.cleaned.Store(true); return nil }

type closer struct{}

func (closer) Close() error { return nil }

type fakePublisher struct{ f *fakeSystem }

func (p fakePublisher) Close() error { return nil }

func (p fakePublisher) Publish(_ context.Context, events []Event) error {
	f := p.f
	call := f.calls.Add(1)
	if f.stall != nil {
		time.Sleep(f.stall(call))
	}
	var err error
	deliver := true
	if f.fail != nil {
		err, deliver = f.fail(call)
		deliver = err == nil || deliver
	}
	if !deliver {
		return err
	}
	f.mu.Lock()
	streams := f.streams
	f.mu.Unlock()
	for i := range events {
		ev := &events[i]
		for sub := range f.topology.Subscriptions {
			spec := &f.topology.Subscriptions[sub]
			if spec.ProcessingDelay > 0 || !spec.Matches(ev) || (f.drop != nil && f.drop(sub, ev.Seq)) {
				continue
			}
			subStreams := streams[sub]
			stream := int(ev.Seq) % len(subStreams)
			subStreams[stream](Delivery{Subscription: sub, Stream: stream, Seq: ev.Seq, ReceivedAt: time.Now()})
			if f.duplicate != nil && f.duplicate(sub, ev.Seq) {
				again := (stream + 1) % len(subStreams)
				subStreams[again](Delivery{Subscription: sub, Stream: again, Seq: ev.Seq, ReceivedAt: time.Now()})
			}
		}
	}
	return err
}

// expectedDeliveries counts the deliveries the smoke scenario's first n events must make, per subscription.
func expectedDeliveries(t *testing.T, sc Scenario, n uint64) []uint64 {
	t.Helper()
	topology := sc.Topology("count")
	src := sc.Events(topology)
	out := make([]uint64, len(topology.Subscriptions))
	for seq := range n {
		ev := src.Event(seq, time.Now())
		for i := range topology.Subscriptions {
			if topology.Subscriptions[i].Matches(&ev) {
				out[i]++
			}
		}
	}
	return out
}

func sum(xs []uint64) uint64 {
	var s uint64
	for _, x := range xs {
		s += x
	}
	return s
}

func TestRunCountsDeliveriesDuplicatesAndLoss(t *testing.T) {
	t.Parallel()
	const rate, seconds = 2000, 1
	const events = rate * seconds
	perSub := expectedDeliveries(t, Scenarios["smoke"], events)
	// Subscription 0 (wf-a) loses seq%50 == 7; subscription 1 (wf-b) gets seq%20 == 7 twice.
	var wantLost, wantDup uint64
	smoke := Scenarios["smoke"]
	topology := smoke.Topology("x")
	src := smoke.Events(topology)
	for seq := range uint64(events) {
		ev := src.Event(seq, time.Now())
		if seq%50 == 7 && topology.Subscriptions[0].Matches(&ev) {
			wantLost++
		}
		if seq%20 == 7 && topology.Subscriptions[1].Matches(&ev) {
			wantDup++
		}
	}
	if wantLost == 0 || wantDup == 0 {
		t.Fatalf("the test's pattern loses %d and duplicates %d events: pick seqs the subscriptions match", wantLost, wantDup)
	}

	sys := &fakeSystem{
		drop:      func(sub int, seq uint64) bool { return sub == 0 && seq%50 == 7 },
		duplicate: func(sub int, seq uint64) bool { return sub == 1 && seq%20 == 7 },
	}
	res, err := Run(context.Background(), RunConfig{
		System: sys, Scenario: smoke, Rate: rate, Duration: seconds * time.Second, DrainTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"published", res.Published, events},
		{"expected", res.Expected, sum(perSub)},
		{"delivered", res.Delivered, sum(perSub) - wantLost},
		{"lost", res.Lost, wantLost},
		{"duplicated", res.Duplicates, wantDup},
		{"unexpected", res.Unexpected, 0},
		{"publish errors", res.PublishErrors, 0},
		{"latency count", uint64(res.Latency.Count), sum(perSub) - wantLost},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if res.Complete {
		t.Errorf("Complete = true with %d deliveries lost", res.Lost)
	}
	if !sys.cleaned.Load() {
		t.Errorf("Run did not clean the system up")
	}
}

// Latency counts from when an event was due, not from when it was sent: a publisher stall shows in the
// latency of the events due meanwhile although the system delivers each one the instant it gets it.
func TestRunCountsLatencyFromIntendedSendTime(t *testing.T) {
	t.Parallel()
	const stall = 300 * time.Millisecond
	sys := &fakeSystem{stall: func(call int64) time.Duration {
		if call == 1 {
			return stall
		}
		return 0
	}}
	res, err := Run(context.Background(), RunConfig{
		System: sys, Scenario: Scenarios["smoke"], Rate: 1000, Duration: time.Second, Publishers: 1,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Latency.Max < float64(stall.Milliseconds()) {
		t.Errorf("max latency %.1f ms, want at least the %v publisher stall: latency must count from the intended send time", res.Latency.Max, stall)
	}
	// The stall delays the events due in its first 300 ms, under a third of the run's.
	if res.Latency.P50 >= float64(stall.Milliseconds())/2 {
		t.Errorf("p50 latency %.1f ms: events due after the stall should not carry it", res.Latency.P50)
	}
	if res.Lost != 0 || res.Published != 1000 {
		t.Errorf("published %d, lost %d; want 1000 and 0", res.Published, res.Lost)
	}
	// The stall is in Publish, so the write path's share of the latency shows it as well.
	if res.PublishLatency.Count != 1000 || res.PublishLatency.Max < float64(stall.Milliseconds()) {
		t.Errorf("publish latency: %d events, max %.1f ms; want 1000 events and at least the %v stall",
			res.PublishLatency.Count, res.PublishLatency.Max, stall)
	}
}

func TestRunReportsFailedPublishes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		deliverAnyway  bool
		wantUnexpected bool
	}{
		{name: "failed and not stored"},
		{name: "failed but stored", deliverAnyway: true, wantUnexpected: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := &fakeSystem{fail: func(call int64) (error, bool) {
				if call%2 == 0 {
					return errors.New("broker unavailable"), tt.deliverAnyway
				}
				return nil, false
			}}
			res, err := Run(context.Background(), RunConfig{
				System: sys, Scenario: Scenarios["smoke"], Rate: 1000, Duration: 500 * time.Millisecond, Publishers: 1, MaxBatch: 10,
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.PublishErrors == 0 || !strings.Contains(res.PublishError, "broker unavailable") {
				t.Fatalf("publish errors %d (%q), want the failures counted with their message", res.PublishErrors, res.PublishError)
			}
			if res.Published+res.PublishErrors != 500 {
				t.Errorf("published %d + failed %d, want 500 events in all", res.Published, res.PublishErrors)
			}
			if res.Lost != 0 {
				t.Errorf("lost %d: events whose Publish failed are not expected, so not lost", res.Lost)
			}
			if got := res.Unexpected > 0; got != tt.wantUnexpected {
				t.Errorf("unexpected deliveries %d, want some: %v", res.Unexpected, tt.wantUnexpected)
			}
		})
	}
}

// A subscriber slower than its load by design (scenario slow) is reported apart: its missing deliveries are
// backlog, not loss, and the drain does not wait for it.
func TestRunReportsSlowSubscriberApart(t *testing.T) {
	t.Parallel()
	sys := &fakeSystem{} // never delivers to subscriptions with a ProcessingDelay
	start := time.Now()
	res, err := Run(context.Background(), RunConfig{
		System: sys, Scenario: Scenarios["slow"], Rate: 2000, Duration: 500 * time.Millisecond, DrainTimeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the run took %v: the drain waited for the slow subscriber", took)
	}
	if len(res.Groups) != 2 || res.Groups[0].Name != "fast" || res.Groups[1].Name != "slow" {
		t.Fatalf("groups %+v, want fast and slow", res.Groups)
	}
	fast, slow := res.Groups[0], res.Groups[1]
	if fast.Lost != 0 || fast.Delivered != fast.Expected || fast.Expected != 1000 {
		t.Errorf("fast group: expected %d delivered %d lost %d; want 1000 of 1000 delivered", fast.Expected, fast.Delivered, fast.Lost)
	}
	if slow.Expected != 100 || slow.Backlog != 100 || slow.Lost != 0 {
		t.Errorf("slow group: expected %d backlog %d lost %d; want 100 expected, all backlog, none lost", slow.Expected, slow.Backlog, slow.Lost)
	}
	if res.Lost != 0 || !res.Complete || res.Backlog != 100 {
		t.Errorf("run: lost %d backlog %d complete %v; want 0, 100, true", res.Lost, res.Backlog, res.Complete)
	}
}

func TestRunLeavesWarmupOutOfLatency(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), RunConfig{
		System: &fakeSystem{}, Scenario: Scenarios["route"], Rate: 1000, Duration: time.Second, Warmup: 250 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Delivered != 1000 || res.Latency.Count != 750 {
		t.Errorf("delivered %d with %d latencies recorded, want 1000 and 750 (the first 250 ms are warm-up)", res.Delivered, res.Latency.Count)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	base := RunConfig{System: &fakeSystem{}, Scenario: Scenarios["smoke"], Rate: 10, Duration: time.Second}
	tests := []struct {
		name   string
		change func(c *RunConfig)
	}{
		{"no system", func(c *RunConfig) { c.System = nil }},
		{"no scenario", func(c *RunConfig) { c.Scenario = Scenario{} }},
		{"zero rate", func(c *RunConfig) { c.Rate = 0 }},
		{"zero duration", func(c *RunConfig) { c.Duration = 0 }},
		{"warm-up as long as the run", func(c *RunConfig) { c.Warmup = time.Second }},
		{"no event at all", func(c *RunConfig) { c.Rate = 0.5 }},
		{"negative publishers", func(c *RunConfig) { c.Publishers = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tt.change(&cfg)
			if _, err := Run(context.Background(), cfg); err == nil {
				t.Fatalf("Run accepted a config with %s", tt.name)
			}
		})
	}
}

// With a linger, publishers gather the events due within it into one call, as a producer's batching delay
// does, instead of sending each event as soon as it is due.
func TestRunLingerGathersEventsIntoFewerCalls(t *testing.T) {
	t.Parallel()
	const linger = 50 * time.Millisecond
	sys := &fakeSystem{}
	res, err := Run(context.Background(), RunConfig{
		System: sys, Scenario: Scenarios["smoke"], Rate: 1000, Duration: time.Second, Linger: linger, Publishers: 2,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// One call per linger period at most, give or take the periods two publishers split.
	if calls, most := sys.calls.Load(), int64(2*time.Second/linger); calls > most {
		t.Errorf("%d Publish calls for 1000 events in 1 s with a %v linger, want at most %d", calls, linger, most)
	}
	if res.Published != 1000 || res.Lost != 0 {
		t.Errorf("published %d, lost %d; want 1000 and 0", res.Published, res.Lost)
	}
	if res.Latency.P50 < float64(linger.Milliseconds())/2 {
		t.Errorf("p50 latency %.1f ms: the linger's wait must count in the latency", res.Latency.P50)
	}
}
