package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// openLoop publishes a run's events at a fixed rate whatever the system does: event seq is due at
// start + seq/rate, and a publisher takes every event that is due (up to MaxBatch) in one Publish. A slow
// Publish does not slow the schedule down; the events due meanwhile wait for the next free publisher, and
// their latency, counted from when they were due, shows the stall (no coordinated omission).
type openLoop struct {
	ledger  *ledger
	events  *EventSource
	batch   uint64
	linger  time.Duration
	timeout time.Duration

	// claimed is the next seq no publisher has taken yet.
	claimed  atomic.Uint64
	accepted atomic.Uint64
	failed   atomic.Uint64
	// lastReturnNanos is when the last Publish returned, in nanoseconds after the ledger's start.
	lastReturnNanos atomic.Int64

	firstErr atomic.Pointer[string]

	// acked is how long each accepted event took from when it was due until its Publish returned (the
	// system's write path alone, publisher waits included), merged from every publisher as it ends.
	ackedMu sync.Mutex
	acked   *hdrhistogram.Histogram
}

func newOpenLoop(l *ledger, events *EventSource, cfg RunConfig) *openLoop {
	return &openLoop{ledger: l, events: events, batch: uint64(cfg.MaxBatch), linger: cfg.Linger, timeout: cfg.PublishTimeout, acked: newHistogram()}
}

// run publishes every event of the run through publishers, one goroutine each, and returns once all are done.
func (o *openLoop) run(ctx context.Context, publishers []Publisher) {
	var wg sync.WaitGroup
	for _, p := range publishers {
		wg.Go(func() { o.publishLoop(ctx, p) })
	}
	wg.Wait()
}

func (o *openLoop) publishLoop(ctx context.Context, p Publisher) {
	l := o.ledger
	buf := make([]Event, 0, o.batch)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	acked := newHistogram()
	defer func() {
		o.ackedMu.Lock()
		o.acked.Merge(acked)
		o.ackedMu.Unlock()
	}()
	for ctx.Err() == nil {
		next := o.claimed.Load()
		if next >= l.events {
			return
		}
		due := l.dueBy(time.Now())
		wakeAt := time.Time{}
		switch {
		case next >= due:
			// Nothing is due: sleep until event next is.
			wakeAt = l.due(next)
		case o.linger > 0 && due-next < o.batch && time.Until(l.due(next).Add(o.linger)) > 0:
			// A batch is filling: wait until its oldest event has lingered long enough.
			wakeAt = l.due(next).Add(o.linger)
		}
		if !wakeAt.IsZero() {
			timer.Reset(time.Until(wakeAt))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		n := min(due-next, o.batch)
		if !o.claimed.CompareAndSwap(next, next+n) {
			continue
		}
		buf = buf[:0]
		for seq := next; seq < next+n; seq++ {
			buf = append(buf, o.events.Event(seq, l.due(seq)))
		}
		o.publish(ctx, p, buf, acked)
	}
}

func (o *openLoop) publish(ctx context.Context, p Publisher, events []Event, acked *hdrhistogram.Histogram) {
	callCtx, cancel := context.WithTimeout(ctx, o.timeout)
	err := p.Publish(callCtx, events)
	cancel()
	returned := int64(time.Since(o.ledger.start()))
	for last := o.lastReturnNanos.Load(); returned > last && !o.lastReturnNanos.CompareAndSwap(last, returned); {
		last = o.lastReturnNanos.Load()
	}
	if err != nil {
		o.failed.Add(uint64(len(events)))
		msg := err.Error()
		o.firstErr.CompareAndSwap(nil, &msg)
		return
	}
	o.ledger.published(events)
	o.accepted.Add(uint64(len(events)))
	for i := range events {
		if seq := events[i].Seq; seq >= o.ledger.warmupEvents {
			latency := time.Duration(returned) - o.ledger.dueAfterStart(seq)
			// Clamped into the histogram's range: RecordValue cannot fail.
			_ = acked.RecordValue(min(max(latency.Microseconds(), histogramMin), histogramMax))
		}
	}
}

// publishLatency is the distribution of acked, once every publisher has ended.
func (o *openLoop) publishLatency() Latency {
	o.ackedMu.Lock()
	defer o.ackedMu.Unlock()
	return latencyOf(o.acked)
}

func (o *openLoop) lastReturn() time.Time {
	return o.ledger.start().Add(time.Duration(o.lastReturnNanos.Load()))
}

func (o *openLoop) firstError() string {
	if msg := o.firstErr.Load(); msg != nil {
		return *msg
	}
	return ""
}
