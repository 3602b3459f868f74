package centrifugo_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/centrifugo"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/systemtest"
)

func TestEachSubscriptionReceivesExactlyItsEvents(t *testing.T) {
	opts := startCentrifugo(t)
	for _, payload := range []centrifugo.Payload{centrifugo.PayloadProtobuf, centrifugo.PayloadJSON} {
		t.Run(payload.String(), func(t *testing.T) {
			opts := opts
			opts.Payload = payload
			// Centrifugo delivers at most once: a duplicate would be a routing bug here.
			systemtest.Check(t, centrifugo.New(opts), systemtest.Options{})
		})
	}
}

// BenchmarkThroughput is run by hand, with a fixed count:
//
//	PDS_CENTRIFUGO_SCRIPT=$PWD/../deploy/scripts/centrifugo.sh \
//	  go test -run '^$' -bench Throughput -benchtime 100000x ./internal/loadgen/centrifugo
func BenchmarkThroughput(b *testing.B) {
	opts := startCentrifugo(b)
	for _, payload := range []centrifugo.Payload{centrifugo.PayloadProtobuf, centrifugo.PayloadJSON} {
		b.Run(payload.String(), func(b *testing.B) {
			opts := opts
			opts.Payload = payload
			systemtest.Throughput(b, centrifugo.New(opts))
		})
	}
}

// startCentrifugo starts a real Centrifugo with deploy/scripts/centrifugo.sh (PDS_CENTRIFUGO_SCRIPT) and
// stops it when the test ends.
func startCentrifugo(t testing.TB) centrifugo.Options {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Centrifugo server: skipped under -short")
	}
	script := os.Getenv("PDS_CENTRIFUGO_SCRIPT")
	if script == "" {
		t.Skip("PDS_CENTRIFUGO_SCRIPT is unset; point it at deploy/scripts/centrifugo.sh to run this test")
	}
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	// The first start builds Centrifugo (minutes, once); later ones take well under a second.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t.Cleanup(func() {
		out, err := exec.Command(script, "stop", dir).CombinedOutput()
		if err != nil {
			t.Errorf("stop Centrifugo: %v\n%s", err, out)
		}
	})
	if err := cmd.Run(); err != nil {
		t.Fatalf("centrifugo.sh start: %v\n%s", err, stderr.String())
	}
	lines := strings.Fields(stdout.String())
	if len(lines) != 4 {
		t.Fatalf("centrifugo.sh start printed %q; want 4 lines: API URL, API key, WebSocket URL, pid", stdout.String())
	}
	pid, err := strconv.Atoi(lines[3])
	if err != nil {
		t.Fatalf("centrifugo.sh start printed pid %q: %v", lines[3], err)
	}
	return centrifugo.Options{APIURL: lines[0], APIKey: lines[1], WebSocketURL: lines[2], Pid: pid}
}

// received records deliveries per subscription and stream.
type received struct {
	mu sync.Mutex
	// bySub[subscription][seq] lists the streams that received seq.
	bySub []map[uint64][]int
}

func newReceived(subscriptions int) *received {
	r := &received{bySub: make([]map[uint64][]int, subscriptions)}
	for i := range r.bySub {
		r.bySub[i] = map[uint64][]int{}
	}
	return r
}

func (r *received) deliver(d loadgen.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bySub[d.Subscription][d.Seq] = append(r.bySub[d.Subscription][d.Seq], d.Stream)
}

func (r *received) has(subscription int, want []uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, seq := range want {
		if _, ok := r.bySub[subscription][seq]; !ok {
			return false
		}
	}
	return true
}

var dataTypes = []pdsv1.PortfolioDataType{
	pdsv1.PortfolioDataType_PORTFOLIO_STATE,
	pdsv1.PortfolioDataType_REBALANCING,
	pdsv1.PortfolioDataType_RISK_BUDGET,
}

var targetSets = [][]string{nil, {"risk-engine"}, {"rebalancer"}, {"reporting"}, {"rebalancer", "risk-engine"}}

// testEvent is event seq with a routing key, targets, data type and priority that vary with seq.
func testEvent(seq uint64, topic string) loadgen.Event {
	dataType := dataTypes[seq%uint64(len(dataTypes))]
	targets := targetSets[(seq/3)%uint64(len(targetSets))]
	priority := int32(seq % 10)
	portfolioID := fmt.Sprintf("pf-%03d", seq%20)
	key := routing.DefaultRoutingKey(portfolioID, dataType)
	msg := &pdsv1.PortfolioDistribution{
		EventId:   loadgen.EventIDFor(seq),
		Timestamp: routing.FormatTimestamp(time.Now()),
		DataType:  dataType,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        portfolioID,
			TotalValue:         1_250_000 + float64(seq),
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.0012, YtdReturn: 0.0841},
		},
		Routing: &pdsv1.RoutingInfo{Topic: topic, RoutingKey: key, TargetWorkflows: targets, Priority: priority},
	}
	return loadgen.Event{
		Seq: seq, Topic: topic, RoutingKey: key, TargetWorkflows: targets, DataType: dataType, Priority: priority,
		Message: msg,
	}
}

// deliverAll prepares topology on a new system for opts, opens every stream, publishes events in batches of
// 50 and waits until each subscription has every event its spec matches. It returns what arrived, checked
// to be exactly the matching events, each once. A channel delivers in publish order, so once every expected
// event is in, anything sent to a stream by mistake (always published before that stream's last expected
// event) is in too.
func deliverAll(t *testing.T, opts centrifugo.Options, topology loadgen.Topology, events []loadgen.Event) *received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys := centrifugo.New(opts)
	if err := sys.Prepare(ctx, topology); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() {
		if err := sys.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	got := newReceived(len(topology.Subscriptions))
	for sub, spec := range topology.Subscriptions {
		for stream := range spec.Streams {
			s, err := sys.OpenStream(ctx, sub, stream, got.deliver)
			if err != nil {
				t.Fatalf("OpenStream(%d, %d): %v", sub, stream, err)
			}
			t.Cleanup(func() { _ = s.Close() })
		}
	}
	want := make([][]uint64, len(topology.Subscriptions))
	for i := range events {
		for sub := range topology.Subscriptions {
			if topology.Subscriptions[sub].Matches(&events[i]) {
				want[sub] = append(want[sub], events[i].Seq)
			}
		}
	}
	pub, err := sys.NewPublisher(ctx)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	defer pub.Close()
	for start := 0; start < len(events); start += 50 {
		batch := events[start:min(start+50, len(events))]
		if err := pub.Publish(ctx, batch); err != nil {
			t.Fatalf("Publish events %d..%d: %v", batch[0].Seq, batch[len(batch)-1].Seq, err)
		}
	}
	for sub := range topology.Subscriptions {
		for !got.has(sub, want[sub]) {
			if ctx.Err() != nil {
				t.Fatalf("subscription %q: not every matching event arrived before the deadline", topology.Subscriptions[sub].Name)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
		}
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	for sub, spec := range topology.Subscriptions {
		wanted := map[uint64]bool{}
		for _, seq := range want[sub] {
			wanted[seq] = true
		}
		for seq, streams := range got.bySub[sub] {
			if !wanted[seq] {
				t.Errorf("subscription %q received event %d, which it does not match", spec.Name, seq)
			}
			if len(streams) != 1 {
				t.Errorf("subscription %q received event %d %d times (streams %v); want once", spec.Name, seq, len(streams), streams)
			}
		}
	}
	return got
}

// testEvents returns events 0..n-1 of testEvent.
func testEvents(n int, topic string) []loadgen.Event {
	events := make([]loadgen.Event, n)
	for seq := range uint64(n) {
		events[seq] = testEvent(seq, topic)
	}
	return events
}

// TestStreamsShareASubscriptionByRoutingKey checks what stands in for Key_Shared: each event of a
// subscription reaches exactly one of its streams, the one its routing key hashes to, and every stream gets
// a share.
func TestStreamsShareASubscriptionByRoutingKey(t *testing.T) {
	opts := startCentrifugo(t)
	topology := loadgen.Topology{
		RunID: systemtest.RunID("keys"),
		Topic: "portfolio/state/updated",
		Subscriptions: []loadgen.SubscriptionSpec{
			{Name: "risk", Workflow: "risk-engine", Streams: 1},
			{
				Name: "rebalancing", Workflow: "rebalancer", Streams: 3,
				Filter: &loadgen.Filter{DataTypes: []pdsv1.PortfolioDataType{pdsv1.PortfolioDataType_REBALANCING}, MinPriority: 4},
			},
		},
	}
	events := testEvents(200, topology.Topic)
	got := deliverAll(t, opts, topology, events)

	got.mu.Lock()
	defer got.mu.Unlock()
	const sub = 1
	spec := topology.Subscriptions[sub]
	perStream := make([]int, spec.Streams)
	for seq, streams := range got.bySub[sub] {
		if wantStream := routing.Partition(events[seq].RoutingKey, spec.Streams); streams[0] != wantStream {
			t.Errorf("event %d (key %q) reached stream %d; want stream %d, its key's", seq, events[seq].RoutingKey, streams[0], wantStream)
		}
		perStream[streams[0]]++
	}
	for stream, n := range perStream {
		if n == 0 {
			t.Errorf("stream %d received nothing; the streams should share the load (per stream %v)", stream, perStream)
		}
	}
}

// TestEventsForEverySubscriptionArriveOnceEach covers the shared channel that carries events every
// subscription matches, and the setting that turns it off: either way each subscription receives exactly
// its events once, including events that reach only some of them.
func TestEventsForEverySubscriptionArriveOnceEach(t *testing.T) {
	opts := startCentrifugo(t)
	tests := []struct {
		name                       string
		channelPerSubscriptionOnly bool
	}{
		{name: "shared channel"},
		{name: "channel per subscription only", channelPerSubscriptionOnly: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topology := loadgen.Topology{
				RunID: systemtest.RunID("fanout"),
				Topic: "portfolio/state/updated",
				Subscriptions: []loadgen.SubscriptionSpec{
					{Name: "risk", Workflow: "risk-engine", Streams: 1},
					{Name: "rebalancing", Workflow: "rebalancer", Streams: 1},
					{Name: "reporting", Workflow: "reporting", Streams: 1},
				},
			}
			opts := opts
			opts.ChannelPerSubscriptionOnly = tt.channelPerSubscriptionOnly
			events := testEvents(200, topology.Topic)
			toAll := 0
			for i := range events {
				if len(events[i].TargetWorkflows) == 0 {
					toAll++
				}
			}
			if toAll == 0 || toAll == len(events) {
				t.Fatalf("%d of %d events target every workflow; the test needs some that do and some that do not", toAll, len(events))
			}
			deliverAll(t, opts, topology, events)
		})
	}
}

func TestPrepareRejectsAWrongAPIKey(t *testing.T) {
	opts := startCentrifugo(t)
	opts.APIKey = "not-" + opts.APIKey
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topology := loadgen.Topology{
		RunID:         "wrong-key",
		Topic:         "portfolio/state/updated",
		Subscriptions: []loadgen.SubscriptionSpec{{Name: "s", Workflow: "w", Streams: 1}},
	}
	err := centrifugo.New(opts).Prepare(ctx, topology)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Prepare with a wrong API key: err = %v; want an error naming status 401", err)
	}
}
