package routing_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

func TestKeyHashMatchesMurmur3ReferenceVectors(t *testing.T) {
	t.Parallel()
	// MurmurHash3_x86_32 with seed 0 (SMHasher reference values), masked to 31 bits as Pulsar does.
	tests := []struct {
		key  string
		want uint32
	}{
		{key: "", want: 0},
		{key: "a", want: 0x3c2569b2},
		{key: "abc", want: 0xb3dd93fa & 0x7fffffff},
		{key: "abcd", want: 0x43ed676a},
		{key: "hello", want: 0x248bfa47},
		{key: "Hello, world!", want: 0xc0363e43 & 0x7fffffff},
		{key: "The quick brown fox jumps over the lazy dog", want: 0x2e4ff723},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.key), func(t *testing.T) {
			t.Parallel()
			if got := routing.KeyHash(tt.key); got != tt.want {
				t.Errorf("KeyHash(%q) = %#x, want %#x", tt.key, got, tt.want)
			}
		})
	}
}

func TestPartitionIsStable(t *testing.T) {
	t.Parallel()
	// Pinned values: changing them re-routes every key of every existing partitioned topic.
	tests := []struct {
		key        string
		partitions int
		want       int
	}{
		{key: "portfolio_001.state.update", partitions: 0, want: 0},
		{key: "portfolio_001.state.update", partitions: 1, want: 0},
		{key: "portfolio_001.state.update", partitions: 16, want: int(routing.KeyHash("portfolio_001.state.update") % 16)},
		{key: "hello", partitions: 16, want: 0x248bfa47 % 16},
		{key: "hello", partitions: 7, want: 0x248bfa47 % 7},
		{key: "The quick brown fox jumps over the lazy dog", partitions: 128, want: 0x2e4ff723 % 128},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.key, tt.partitions), func(t *testing.T) {
			t.Parallel()
			for range 3 {
				if got := routing.Partition(tt.key, tt.partitions); got != tt.want {
					t.Fatalf("Partition(%q, %d) = %d, want %d", tt.key, tt.partitions, got, tt.want)
				}
			}
		})
	}
}

func TestPartitionSpreadsKeysAcross16Partitions(t *testing.T) {
	t.Parallel()
	const partitions, keys = 16, 16000
	counts := make([]int, partitions)
	for i := range keys {
		p := routing.Partition(fmt.Sprintf("portfolio_%05d.state.update", i), partitions)
		if p < 0 || p >= partitions {
			t.Fatalf("Partition returned %d, outside [0, %d)", p, partitions)
		}
		counts[p]++
	}
	// 1000 expected per partition, standard deviation about 31: ±15% is over 4.5 sigma.
	for p, n := range counts {
		if n < 850 || n > 1150 {
			t.Errorf("partition %d got %d of %d sequential keys, want 850..1150 (all counts %v)", p, n, keys, counts)
		}
	}
}

func TestTargetsWorkflow(t *testing.T) {
	t.Parallel()
	withTargets := func(targets ...string) *pdsv1.PortfolioDistribution {
		return &pdsv1.PortfolioDistribution{Routing: &pdsv1.RoutingInfo{TargetWorkflows: targets}}
	}
	tests := []struct {
		name     string
		event    *pdsv1.PortfolioDistribution
		workflow string
		want     bool
	}{
		{name: "no routing reaches every workflow", event: &pdsv1.PortfolioDistribution{}, workflow: "reporting", want: true},
		{name: "empty targets reach every workflow", event: withTargets(), workflow: "reporting", want: true},
		{name: "listed workflow", event: withTargets("reporting", "ui"), workflow: "ui", want: true},
		{name: "unlisted workflow", event: withTargets("reporting", "ui"), workflow: "risk", want: false},
		{name: "membership is exact, not a prefix", event: withTargets("reporting_analytics"), workflow: "reporting", want: false},
		{name: "membership is case-sensitive", event: withTargets("UI"), workflow: "ui", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := routing.TargetsWorkflow(tt.event, tt.workflow); got != tt.want {
				t.Errorf("TargetsWorkflow(%v, %q) = %v, want %v", tt.event.GetRouting().GetTargetWorkflows(), tt.workflow, got, tt.want)
			}
		})
	}
}

func TestToDistributedCarriesEveryField(t *testing.T) {
	t.Parallel()
	ev := validEvent()
	if err := routing.Normalize(ev, "", publishTime); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	got := routing.ToDistributed(ev)
	if got.EventId != ev.EventId || got.Timestamp != ev.Timestamp {
		t.Errorf("event_id/timestamp = %q/%q, want %q/%q", got.EventId, got.Timestamp, ev.EventId, ev.Timestamp)
	}
	d := got.GetDistribution()
	if d.GetTopic() != "portfolio/state/updated" || d.GetRoutingKey() != "portfolio_001.state.update" ||
		!slices.Equal(d.GetTargetWorkflows(), []string{"reporting_analytics", "user_interface"}) {
		t.Errorf("distribution = %v, want the event's topic, routing key and targets", d)
	}
	if got.GetData() != ev.GetData() {
		t.Errorf("data = %v, want the event's data", got.GetData())
	}
}

func TestDefaultTopicOfUnspecifiedTypeIsEmpty(t *testing.T) {
	t.Parallel()
	if got := routing.DefaultTopic(pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED); got != "" {
		t.Errorf("DefaultTopic(UNSPECIFIED) = %q, want \"\"", got)
	}
}

// FormatTimestamp writes its digits itself: it must write what time.Format writes, for times across the
// whole range, in any zone, and fall back to it outside years 0–9999.
func TestFormatTimestampWritesWhatTimeFormatWrites(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.FixedZone("east", 14*3600), time.FixedZone("west", -(9*3600 + 30*60))}
	lo := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	hi := time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	times := []time.Time{
		time.Date(2025, 6, 21, 10, 0, 0, 999_999_999, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for range 100_000 {
		sec := lo + rng.Int64N(hi-lo)
		times = append(times, time.Unix(sec, rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))]))
	}
	for _, ts := range times {
		if got, want := routing.FormatTimestamp(ts), ts.UTC().Format(routing.TimestampLayout); got != want {
			t.Fatalf("FormatTimestamp(%v) = %q, time.Format writes %q", ts, got, want)
		}
	}
}
