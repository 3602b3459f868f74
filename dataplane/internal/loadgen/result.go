package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run measured. It is written as one JSON object per run.
type Result struct {
	System    string    `json:"system"`
	Scenario  string    `json:"scenario"`
	RunID     string    `json:"run_id"`
	StartedAt time.Time `json:"started_at"`
	Settings  Settings  `json:"settings"`

	// OfferedRate is the target publish rate in events/s; AchievedPublishRate what the publishers managed
	// (events accepted by the system per second of the publishing phase).
	OfferedRate         float64 `json:"offered_rate"`
	AchievedPublishRate float64 `json:"achieved_publish_rate"`
	Published           uint64  `json:"published"`
	// PublishErrors counts events whose Publish failed; they are not retried (open loop) and not expected.
	PublishErrors uint64 `json:"publish_errors"`
	// PublishError is the first such error.
	PublishError string `json:"publish_error,omitempty"`

	// Deliveries: each (event, subscription) pair that must arrive is expected once.
	Expected  uint64 `json:"expected"`
	Delivered uint64 `json:"delivered"`
	// Duplicates are receipts of an event its subscription already had, on any of its streams.
	Duplicates uint64 `json:"duplicated"`
	// Lost are expected deliveries that never arrived (by the end of the drain), except Backlog.
	Lost uint64 `json:"lost"`
	// Backlog are expected deliveries not yet made to subscriptions slower than their load by design
	// (scenario slow): still held by the system, not lost.
	Backlog uint64 `json:"backlog"`
	// Unexpected are deliveries of events whose Publish failed, or that the subscription does not match.
	Unexpected uint64 `json:"unexpected"`
	// Foreign are deliveries of events this run did not generate.
	Foreign uint64 `json:"foreign,omitempty"`
	// DeliveredPerSecond is Delivered over the time from the first due event to the last delivery.
	DeliveredPerSecond float64 `json:"delivered_per_second"`
	// Complete: every expected delivery (Backlog aside) arrived before the drain timeout.
	Complete bool `json:"complete"`

	// Latency is publish→receive, from each event's intended send time, over every subscription that must
	// keep up (Groups has the slow ones), in milliseconds. Events due in the warm-up are left out.
	Latency Latency `json:"latency_ms"`
	// PublishLatency is from each event's intended send time until the system acknowledged its Publish, in
	// milliseconds: the write path's share of Latency (publishers' waits included). Warm-up left out.
	PublishLatency Latency `json:"publish_latency_ms"`
	// Groups splits the numbers by kind of subscription when a scenario mixes them (scenario slow).
	Groups []GroupResult `json:"groups,omitempty"`

	// Processes are the CPU time and peak memory of the system's server processes and the load tool
	// ("pds-load", which holds the systems that run in-process) over the run, publishing to drained.
	Processes []ProcessResult `json:"processes"`
	// CPUMicrosPerDelivery is the CPU time of every process, load tool included, per delivered event.
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	// ServerCPUMicrosPerDelivery leaves the load tool out.
	ServerCPUMicrosPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	// DeliveriesPerServerCPUSecond is deliveries per second of server CPU time (per core fully used).
	DeliveriesPerServerCPUSecond float64 `json:"deliveries_per_server_cpu_second"`

	// PublishSeconds is the publishing phase; TotalSeconds adds the drain.
	PublishSeconds float64 `json:"publish_seconds"`
	TotalSeconds   float64 `json:"total_seconds"`
	// CloseError is what streams and publishers reported when closed (e.g. acknowledgements that failed).
	CloseError   string `json:"close_error,omitempty"`
	CleanupError string `json:"cleanup_error,omitempty"`
}

// Settings are the knobs of a run, kept with its numbers.
type Settings struct {
	Partitions    int     `json:"partitions"`
	Subscriptions int     `json:"subscriptions"`
	Streams       int     `json:"streams"`
	Publishers    int     `json:"publishers"`
	MaxBatch      int     `json:"max_batch"`
	LingerMillis  float64 `json:"linger_ms"`
	DurationSec   float64 `json:"duration_seconds"`
	WarmupSec     float64 `json:"warmup_seconds"`
	DrainTimeout  float64 `json:"drain_timeout_seconds"`
	Cores         int     `json:"cores"`
	ClockTicks    int64   `json:"clock_ticks_per_second"`
}

// Saturation bounds: a run did not keep up when its publishers reached less than saturatedPublishShare of
// the offered rate, when deliveries were still missing at the end of the drain, or when its P99 exceeded
// saturatedP99 (queues grew through the run).
const (
	saturatedPublishShare = 0.95
	saturatedP99          = 5 * time.Second
)

// Saturated says whether the system did not keep up with the run's offered rate, and why; false for nil.
// A higher rate would only take longer to say the same.
func (r *Result) Saturated() (bool, string) {
	switch {
	case r == nil:
		return false, ""
	case r.AchievedPublishRate < saturatedPublishShare*r.OfferedRate:
		return true, fmt.Sprintf("published %.0f of %.0f events/s", r.AchievedPublishRate, r.OfferedRate)
	case !r.Complete:
		return true, fmt.Sprintf("%d deliveries still missing when the drain ended", r.Lost)
	case r.Latency.P99 > float64(saturatedP99.Milliseconds()):
		return true, fmt.Sprintf("P99 %.0f ms", r.Latency.P99)
	}
	return false, ""
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// GroupResult is one kind of subscription's share of a run.
type GroupResult struct {
	Name          string  `json:"name"`
	Subscriptions int     `json:"subscriptions"`
	Expected      uint64  `json:"expected"`
	Delivered     uint64  `json:"delivered"`
	Duplicates    uint64  `json:"duplicated"`
	Lost          uint64  `json:"lost"`
	Backlog       uint64  `json:"backlog"`
	Latency       Latency `json:"latency_ms"`
}

// ProcessResult is one process's resource use over a run.
type ProcessResult struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUMicrosPerDelivery is CPUSeconds per delivered event, in microseconds.
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	PeakRSSMiB           float64 `json:"peak_rss_mib"`
	Error                string  `json:"error,omitempty"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// fill puts the ledger's totals into r.
func (l *ledger) fill(r *Result) {
	steady := newHistogram()
	groups := map[bool]*GroupResult{}
	groupHist := map[bool]*hdrhistogram.Histogram{}
	for _, sub := range l.subs {
		g := groups[sub.mayLag]
		if g == nil {
			g = &GroupResult{Name: "fast"}
			if sub.mayLag {
				g.Name = "slow"
			}
			groups[sub.mayLag] = g
			groupHist[sub.mayLag] = newHistogram()
		}
		g.Subscriptions++
		missing := sub.expected.countAndNot(sub.received)
		g.Expected += sub.expected.count()
		r.Unexpected += sub.received.countAndNot(sub.expected)
		if sub.mayLag {
			g.Backlog += missing
		} else {
			g.Lost += missing
		}
		for _, st := range sub.streams {
			st.mu.Lock()
			g.Delivered += st.delivered
			g.Duplicates += st.duplicates
			r.Foreign += st.foreign
			groupHist[sub.mayLag].Merge(st.total)
			if !sub.mayLag {
				steady.Merge(st.total)
			}
			st.mu.Unlock()
		}
	}
	for lag, g := range groups {
		g.Latency = latencyOf(groupHist[lag])
		r.Expected += g.Expected
		r.Delivered += g.Delivered
		r.Duplicates += g.Duplicates
		r.Lost += g.Lost
		r.Backlog += g.Backlog
	}
	r.Latency = latencyOf(steady)
	if len(groups) > 1 {
		r.Groups = []GroupResult{*groups[false], *groups[true]}
	}
}

// WriteTable writes results as an aligned text table, one row per result (and per group where a result has
// groups).
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"system", "scenario", "offered/s", "published/s", "delivered/s", "p50 ms", "p90 ms", "p99 ms",
		"p99.9 ms", "max ms", "pub p50/p99 ms", "expected", "lost", "backlog", "dup", "cpu µs/dlv", "server µs/dlv", "peak RSS MiB", ""}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range results {
		var rss []string
		for _, p := range r.Processes {
			rss = append(rss, fmt.Sprintf("%s=%.0f", p.Name, p.PeakRSSMiB))
		}
		row := func(name string, g GroupResult) {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f/%.1f\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%s\t\n",
				r.System, name, r.OfferedRate, r.AchievedPublishRate, r.DeliveredPerSecond,
				g.Latency.P50, g.Latency.P90, g.Latency.P99, g.Latency.P999, g.Latency.Max,
				r.PublishLatency.P50, r.PublishLatency.P99, g.Expected, g.Lost, g.Backlog, g.Duplicates,
				r.CPUMicrosPerDelivery, r.ServerCPUMicrosPerDelivery, strings.Join(rss, " "))
		}
		row(r.Scenario, GroupResult{Expected: r.Expected, Lost: r.Lost, Backlog: r.Backlog, Duplicates: r.Duplicates, Latency: r.Latency})
		for _, g := range r.Groups {
			row(r.Scenario+"/"+g.Name, g)
		}
	}
	return tw.Flush()
}
