package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
)

// RunConfig is one run: a scenario on a system at one offered rate.
type RunConfig struct {
	System   System
	Scenario Scenario
	// RunID names what the run creates; empty means NewRunID().
	RunID string
	// Rate is the offered load in events per second; required.
	Rate float64
	// Duration is how long events are published; required. The run publishes Rate × Duration events.
	Duration time.Duration
	// Warmup leaves the latencies of events due in the run's first Warmup out of the histograms (their
	// delivery still counts). Zero records every event.
	Warmup time.Duration
	// DrainTimeout bounds the wait, after the last publish, for the deliveries still missing. Zero means 30s.
	DrainTimeout time.Duration
	// Publishers is how many goroutines publish concurrently. Zero means 16: enough that the system, not the
	// publishers' own concurrency, bounds the rate (with 4, PDS's publishers topped out near 20K events/s).
	Publishers int
	// MaxBatch is the most events one Publish call carries. Zero means 1000 (the most PDS takes).
	MaxBatch int
	// Linger lets a publisher wait until the oldest due event has waited this long (or MaxBatch are due)
	// before publishing, as a producer's batching delay does: fewer, larger calls. The wait counts in the
	// latency. Zero publishes whatever is due at once.
	Linger time.Duration
	// PublishTimeout bounds one Publish call. Zero means 10s.
	PublishTimeout time.Duration
	// Progress receives a progress line every ProgressInterval (zero: 2s); nil means no progress.
	Progress         io.Writer
	ProgressInterval time.Duration
	// SelfName is the load tool's name in Result.Processes. Empty means "pds-load".
	SelfName string
}

// Defaults of RunConfig.
const (
	DefaultDrainTimeout     = 30 * time.Second
	DefaultPublishers       = 16
	DefaultMaxBatch         = 1000
	DefaultPublishTimeout   = 10 * time.Second
	DefaultProgressInterval = 2 * time.Second
	// openTimeout bounds Prepare and opening every stream; cleanupTimeout bounds Cleanup.
	openTimeout    = 2 * time.Minute
	cleanupTimeout = time.Minute
	// streamOpeners is how many streams are opened at once.
	streamOpeners = 8
)

func (c *RunConfig) withDefaults() (RunConfig, error) {
	out := *c
	switch {
	case out.System == nil:
		return out, errors.New("run: no system")
	case out.Scenario.topology == nil:
		return out, errors.New("run: no scenario")
	case out.Rate <= 0:
		return out, fmt.Errorf("run: rate must be positive (got %v events/s)", out.Rate)
	case out.Duration <= 0:
		return out, fmt.Errorf("run: duration must be positive (got %v)", out.Duration)
	case out.Warmup < 0 || out.Warmup >= out.Duration:
		return out, fmt.Errorf("run: warm-up must be from 0 to less than the duration %v (got %v)", out.Duration, out.Warmup)
	case out.Publishers < 0 || out.MaxBatch < 0 || out.DrainTimeout < 0 || out.PublishTimeout < 0 || out.Linger < 0:
		return out, errors.New("run: publishers, batch, linger, drain timeout and publish timeout must not be negative")
	}
	if uint64(out.Rate*out.Duration.Seconds()) == 0 {
		return out, fmt.Errorf("run: %v at %v events/s publishes no event", out.Duration, out.Rate)
	}
	if out.RunID == "" {
		out.RunID = NewRunID()
	}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = DefaultDrainTimeout
	}
	if out.Publishers == 0 {
		out.Publishers = DefaultPublishers
	}
	if out.MaxBatch == 0 {
		out.MaxBatch = DefaultMaxBatch
	}
	if out.PublishTimeout == 0 {
		out.PublishTimeout = DefaultPublishTimeout
	}
	if out.ProgressInterval <= 0 {
		out.ProgressInterval = DefaultProgressInterval
	}
	if out.SelfName == "" {
		out.SelfName = "pds-load"
	}
	return out, nil
}

// NewRunID returns a short id, unique enough to keep runs apart: lower-case letters and digits, valid in
// every system's names (PDS topics and subscriptions, Pulsar tenants, Centrifugo channels).
func NewRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "r" + strconv.FormatInt(time.Now().Unix()%1_000_000, 36) + fmt.Sprintf("%08x", b)
}

// Run prepares the scenario's topology on the system, opens every stream, publishes Rate events per second
// for Duration in open loop, waits until the deliveries arrived (or DrainTimeout passed), and cleans up.
// Deliveries missing at the end are reported as lost, not as an error; an error means the run could not be
// carried out (Prepare, a stream or a publisher failed to open).
func Run(ctx context.Context, cfg RunConfig) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	sys := cfg.System
	topology := cfg.Scenario.Topology(cfg.RunID)
	events := cfg.Scenario.Events(topology)
	total := uint64(cfg.Rate * cfg.Duration.Seconds())
	progressf(cfg.Progress, "[%s %s %.0f/s] run %s: %s; %d events over %v\n", sys.Name(), cfg.Scenario.Name, cfg.Rate,
		cfg.RunID, describe(topology), total, cfg.Duration)

	res := Result{System: sys.Name(), Scenario: cfg.Scenario.Name, RunID: cfg.RunID, OfferedRate: cfg.Rate}
	res.Settings = Settings{
		Partitions: topology.Partitions, Subscriptions: len(topology.Subscriptions), Publishers: cfg.Publishers,
		MaxBatch: cfg.MaxBatch, LingerMillis: float64(cfg.Linger) / float64(time.Millisecond), DurationSec: cfg.Duration.Seconds(), WarmupSec: cfg.Warmup.Seconds(),
		DrainTimeout: cfg.DrainTimeout.Seconds(), Cores: runtime.NumCPU(), ClockTicks: clockTicks(),
	}

	// Streams and publishers get a context that lasts the whole run (a system may tie them to it); the
	// opening phase is bounded by a timer that cancels it.
	openCtx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	openTimer := time.AfterFunc(openTimeout, cancelOpen)
	openFailed := func(what string, err error) (Result, error) {
		openTimer.Stop()
		cleanup(sys, &res)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = fmt.Errorf("%w (not done within %v)", err, openTimeout)
		}
		return res, fmt.Errorf("%s on %s: %w", what, sys.Name(), err)
	}
	if err := sys.Prepare(openCtx, topology); err != nil {
		return openFailed("prepare scenario "+cfg.Scenario.Name, err)
	}
	l := newLedger(topology, total, cfg.Rate, cfg.Warmup)
	res.Settings.Streams = len(l.streams)
	streams, err := openStreams(openCtx, sys, l)
	if err != nil {
		return openFailed("open streams", err)
	}
	publishers := make([]Publisher, 0, cfg.Publishers)
	for range cfg.Publishers {
		p, err := sys.NewPublisher(openCtx)
		if err != nil {
			_ = closeAll(streams, publishers)
			return openFailed("new publisher", err)
		}
		publishers = append(publishers, p)
	}
	if !openTimer.Stop() {
		_ = closeAll(streams, publishers)
		return openFailed("open", context.Canceled)
	}

	processes := map[string]int{cfg.SelfName: os.Getpid()}
	for name, pid := range sys.Processes() {
		processes[name] = pid
	}
	meter := startMeter(processes)
	l.begin(time.Now())
	start := l.start()
	res.StartedAt = start.UTC()
	pub := newOpenLoop(l, events, cfg)
	stopProgress := startProgress(cfg, l, pub)

	pub.run(ctx, publishers)
	publishEnd := pub.lastReturn()
	drain(ctx, l, cfg.DrainTimeout)
	end := time.Now()
	stopProgress()

	c := l.counts()
	res.Processes = meter.finish(c.delivered)
	if err := closeAll(streams, publishers); err != nil {
		res.CloseError = err.Error()
	}
	cleanup(sys, &res)

	res.Published = pub.accepted.Load()
	res.PublishErrors = pub.failed.Load()
	res.PublishError = pub.firstError()
	res.PublishLatency = pub.publishLatency()
	res.PublishSeconds = publishEnd.Sub(start).Seconds()
	res.TotalSeconds = end.Sub(start).Seconds()
	if res.PublishSeconds > 0 {
		res.AchievedPublishRate = float64(res.Published) / res.PublishSeconds
	}
	l.fill(&res)
	res.Complete = res.Lost == 0
	if span := c.last.Sub(start).Seconds(); span > 0 {
		res.DeliveredPerSecond = float64(res.Delivered) / span
	}
	fillCPU(&res, cfg.SelfName)
	return res, ctx.Err()
}

// fillCPU derives the per-delivery CPU figures and orders the processes: the system's by name, then the
// load tool.
func fillCPU(res *Result, self string) {
	slices.SortFunc(res.Processes, func(a, b ProcessResult) int {
		switch {
		case a.Name == self:
			return 1
		case b.Name == self:
			return -1
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	var all, server float64
	for _, p := range res.Processes {
		all += p.CPUSeconds
		if p.Name != self {
			server += p.CPUSeconds
		}
	}
	if res.Delivered > 0 {
		res.CPUMicrosPerDelivery = all * 1e6 / float64(res.Delivered)
		res.ServerCPUMicrosPerDelivery = server * 1e6 / float64(res.Delivered)
	}
	if server > 0 {
		res.DeliveriesPerServerCPUSecond = float64(res.Delivered) / server
	}
}

// openStreams opens every stream of the topology, a few at a time; on failure it closes those it opened.
func openStreams(ctx context.Context, sys System, l *ledger) ([]Stream, error) {
	type slot struct{ sub, stream int }
	var slots []slot
	var recorders []*streamRecorder
	for i, sub := range l.subs {
		for j, st := range sub.streams {
			slots = append(slots, slot{i, j})
			recorders = append(recorders, st)
		}
	}
	streams := make([]Stream, len(slots))
	errs := make([]error, len(slots))
	sem := make(chan struct{}, streamOpeners)
	var wg sync.WaitGroup
	for k, s := range slots {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			streams[k], errs[k] = sys.OpenStream(ctx, s.sub, s.stream, recorders[k].deliver)
			if errs[k] != nil {
				errs[k] = fmt.Errorf("open stream %d of subscription %q on %s: %w", s.stream, l.subs[s.sub].spec.Name, sys.Name(), errs[k])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = closeAll(streams, nil)
		return nil, err
	}
	return streams, nil
}

// closeAll closes streams and publishers concurrently and returns what they reported.
func closeAll(streams []Stream, publishers []Publisher) error {
	errs := make([]error, len(streams)+len(publishers))
	var wg sync.WaitGroup
	for i, s := range streams {
		if s != nil {
			wg.Go(func() { errs[i] = s.Close() })
		}
	}
	for i, p := range publishers {
		wg.Go(func() { errs[len(streams)+i] = p.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func cleanup(sys System, res *Result) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := sys.Cleanup(ctx); err != nil {
		res.CleanupError = err.Error()
	}
}

// drainPoll is how often the drain checks whether the last deliveries arrived.
const drainPoll = 20 * time.Millisecond

// drain waits until every subscription that must keep up has everything it must receive, or timeout passes.
func drain(ctx context.Context, l *ledger, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(drainPoll)
	defer ticker.Stop()
	for !l.steadyComplete() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format, args...)
	}
}

// startProgress writes a progress line every interval until the returned stop is called.
func startProgress(cfg RunConfig, l *ledger, pub *openLoop) (stop func()) {
	if cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(cfg.ProgressInterval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-ticker.C:
				c := l.counts()
				window := latencyOf(l.takeWindow())
				// Backlog: events due but not yet published (waiting for a publisher or in a Publish call).
				due := l.dueBy(now)
				accepted, failed := pub.accepted.Load(), pub.failed.Load()
				expected := l.expectedDeliveries.Load()
				fmt.Fprintf(cfg.Progress, "[%s %s %.0f/s] %5.1fs published %d/%d (backlog %d, errors %d) delivered %d outstanding %d dup %d | window p99 %.2f ms max %.2f ms\n",
					cfg.System.Name(), cfg.Scenario.Name, cfg.Rate, now.Sub(l.start()).Seconds(),
					accepted, l.events, due-min(due, accepted+failed), failed,
					c.delivered, expected-min(expected, c.delivered), c.duplicates, window.P99, window.Max)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
