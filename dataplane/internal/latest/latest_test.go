package latest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/latest"
	"google.golang.org/protobuf/proto"
)

func event(id string, dataType pdsv1.PortfolioDataType, portfolioID string, totalValue float64) *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		EventId: id, Timestamp: "2025-06-21T10:00:00.000Z", DataType: dataType,
		Data:    &pdsv1.PortfolioData{PortfolioId: portfolioID, TotalValue: totalValue},
		Routing: &pdsv1.RoutingInfo{Topic: "t", RoutingKey: portfolioID + ".k.update"},
	}
}

func TestNewestEventPerPortfolioIsReadBackAndStoredInTheBrokerTable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, store := newStore(ctx, t)
	tenant := tenancy.DefaultTenantID

	events := []*pdsv1.PortfolioDistribution{
		event("s1", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "p1", 1),
		event("s2", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "p1", 2),
		event("perf", pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION, "p1", 3),
		event("cash", pdsv1.PortfolioDataType_CASH_MANAGEMENT, "p2", 4),
	}
	if err := store.Record(tenant, events, encodings(t, events)); err != nil {
		t.Fatalf("record: %v", err)
	}

	tests := []struct {
		name        string
		view        latest.View
		portfolioID string
		wantEventID string // "" = none
	}{
		{name: "newest state of a portfolio", view: latest.ViewState, portfolioID: "p1", wantEventID: "s2"},
		{name: "performance kept apart from state", view: latest.ViewPerformance, portfolioID: "p1", wantEventID: "perf"},
		{name: "types without a view are not kept", view: latest.ViewState, portfolioID: "p2"},
	}
	check := func(t *testing.T, stage string) {
		for _, tt := range tests {
			t.Run(stage+"/"+tt.name, func(t *testing.T) {
				got, ok, err := store.Get(ctx, tenant, tt.view, tt.portfolioID)
				if err != nil {
					t.Fatalf("get: %v", err)
				}
				if tt.wantEventID == "" {
					if ok {
						t.Fatalf("got %v, want nothing", got)
					}
					return
				}
				if !ok || got.GetEventId() != tt.wantEventID {
					t.Fatalf("got %v (found %v), want event %s", got, ok, tt.wantEventID)
				}
			})
		}
	}
	check(t, "before the table write")

	if err := store.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	raw, ok, err := b.GetLatest(ctx, tenant, string(latest.ViewState), "p1")
	if err != nil || !ok {
		t.Fatalf("broker table lacks the state of p1 after flush (found %v, error %v)", ok, err)
	}
	var stored pdsv1.PortfolioDistribution
	if len(raw) == 0 || raw[0] != 0 {
		t.Fatalf("broker table value does not start with the stored-event format byte: %x", raw)
	}
	if err := proto.Unmarshal(raw[1:], &stored); err != nil || stored.GetEventId() != "s2" {
		t.Fatalf("broker table holds %v (decode error %v), want event s2", &stored, err)
	}
	check(t, "after the table write")
}

// A value written by earlier versions (a PortfolioDistributed message) still reads back.
func TestViewWrittenByEarlierVersionsIsRead(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, store := newStore(ctx, t)
	tenant := tenancy.DefaultTenantID
	old, err := proto.Marshal(&pdsv1.PortfolioDistributed{
		EventId: "old", Timestamp: "2025-06-21T10:00:00.000Z",
		Distribution: &pdsv1.DistributionInfo{Topic: "t", RoutingKey: "p9.state.update"},
		Data:         &pdsv1.PortfolioData{PortfolioId: "p9", TotalValue: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutLatest(ctx, tenant, string(latest.ViewState), "p9", old); err != nil {
		t.Fatalf("put a value the old way: %v", err)
	}
	got, ok, err := store.Get(ctx, tenant, latest.ViewState, "p9")
	if err != nil || !ok || got.GetEventId() != "old" || got.GetData().GetTotalValue() != 9 || got.GetDistribution().GetRoutingKey() != "p9.state.update" {
		t.Fatalf("Get = %v, %v, %v; want the old value", got, ok, err)
	}
}

// newStore opens an embedded broker and a Store over it, both closed when the test ends; under -short it
// skips the test instead.
func newStore(ctx context.Context, t *testing.T) (*broker.EmbeddedBroker, *latest.Store) {
	t.Helper()
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	store := latest.New(b, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = store.Close(context.Background()) })
	return b, store
}

func encodings(t *testing.T, events []*pdsv1.PortfolioDistribution) [][]byte {
	t.Helper()
	out := make([][]byte, len(events))
	for i, ev := range events {
		var err error
		if out[i], err = proto.Marshal(ev); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// BenchmarkRecord measures noting the views of one Publish call of 20 events, half of them with a view,
// over 1,000 portfolios, while the writer stores them in the engine behind it.
func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	br, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	store := latest.New(br, slog.New(slog.DiscardHandler))
	defer store.Close(ctx)
	const perCall = 20
	calls := make([][]*pdsv1.PortfolioDistribution, 50)
	stored := make([][][]byte, len(calls))
	for c := range calls {
		for i := range perCall {
			dataType := pdsv1.PortfolioDataType_PORTFOLIO_STATE
			if i%2 == 1 {
				dataType = pdsv1.PortfolioDataType_REBALANCING
			}
			calls[c] = append(calls[c], event(fmt.Sprintf("e%d-%d", c, i), dataType, fmt.Sprintf("p%d", (c*perCall+i)%1000), float64(i)))
		}
		for _, ev := range calls[c] {
			data, err := proto.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			stored[c] = append(stored[c], data)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := i % len(calls)
		if err := store.Record(tenancy.DefaultTenantID, calls[c], stored[c]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// countingViews counts the table writes of a real embedded broker's views, by key; while failing is set,
// each write fails instead of reaching the table.
type countingViews struct {
	*broker.EmbeddedBroker
	mu      sync.Mutex
	puts    map[string]int
	failing bool
}

func (c *countingViews) PutLatest(ctx context.Context, tenantID, view, key string, value []byte) error {
	c.mu.Lock()
	c.puts[key]++
	failing := c.failing
	c.mu.Unlock()
	if failing {
		return errors.New("table unavailable (injected)")
	}
	return c.EmbeddedBroker.PutLatest(ctx, tenantID, view, key, value)
}

// While the table fails, Flush waits for the writer's retries instead of making it retry without rest.
func TestFlushDoesNotHurryRetriesOfAFailingTable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, _ := newStore(ctx, t)
	views := &countingViews{EmbeddedBroker: b, puts: map[string]int{}, failing: true}
	store := latest.New(views, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = store.Close(context.Background()) })
	batch := []*pdsv1.PortfolioDistribution{event("s1", pdsv1.PortfolioDataType_PORTFOLIO_STATE, "p1", 1)}
	if err := store.Record(tenancy.DefaultTenantID, batch, encodings(t, batch)); err != nil {
		t.Fatal(err)
	}
	flushCtx, cancelFlush := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelFlush()
	if err := store.Flush(flushCtx); err == nil {
		t.Fatal("Flush succeeded against a failing table")
	}
	views.mu.Lock()
	puts := views.puts["p1"]
	views.failing = false
	views.mu.Unlock()
	// One attempt at once; the retry is due a second later (retryPause).
	if puts != 1 {
		t.Fatalf("%d writes in Flush's half second against a failing table, want 1", puts)
	}
	if err := store.Flush(ctx); err != nil {
		t.Fatalf("Flush once the table is back: %v", err)
	}
}

// A portfolio whose events come every 10 ms has its view written about once a second, not once per
// event or per round trip of the table; Flush still writes the newest value at once.
func TestViewsOfBusyPortfoliosAreWrittenOncePerRound(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, _ := newStore(ctx, t)
	views := &countingViews{EmbeddedBroker: b, puts: map[string]int{}}
	store := latest.New(views, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = store.Close(context.Background()) })

	var last *pdsv1.PortfolioDistribution
	for i := range 150 {
		last = event(fmt.Sprintf("s%d", i), pdsv1.PortfolioDataType_PORTFOLIO_STATE, "busy", float64(i))
		batch := []*pdsv1.PortfolioDistribution{last}
		if err := store.Record(tenancy.DefaultTenantID, batch, encodings(t, batch)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	flushStart := time.Now()
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(flushStart); waited > 900*time.Millisecond {
		t.Errorf("Flush took %v: it waited for the pause between rounds", waited)
	}
	views.mu.Lock()
	puts := views.puts["busy"]
	views.mu.Unlock()
	// Rounds start at about 0 s and 1 s, and Flush writes the rest: 150 events over 1.5 s.
	if puts < 1 || puts > 3 {
		t.Errorf("the view was written %d times for 150 events over 1.5 s; want at most 3", puts)
	}
	stored, ok, err := b.GetLatest(ctx, tenancy.DefaultTenantID, string(latest.ViewState), "busy")
	if err != nil || !ok {
		t.Fatalf("table read: %v, %v", ok, err)
	}
	if want := encodings(t, []*pdsv1.PortfolioDistribution{last})[0]; string(stored[1:]) != string(want) {
		t.Fatalf("the table holds an older value than the last event's")
	}
}
