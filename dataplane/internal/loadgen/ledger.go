package loadgen

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record microseconds from 1 µs to 60 s with 3 significant digits; slower deliveries are
// recorded as 60 s.
const (
	histogramMin     = 1
	histogramMax     = int64(60 * time.Second / time.Microsecond)
	histogramSigDigs = 3
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histogramMin, histogramMax, histogramSigDigs)
}

// bitset is a fixed-size set of seqs that many goroutines update at once.
type bitset []atomic.Uint64

func newBitset(n uint64) bitset { return make(bitset, (n+63)/64) }

// add puts seq in the set and reports whether it was there already.
func (b bitset) add(seq uint64) (already bool) {
	mask := uint64(1) << (seq % 64)
	return b[seq/64].Or(mask)&mask != 0
}

// countAndNot counts the seqs in b that are not in other.
func (b bitset) countAndNot(other bitset) uint64 {
	var n int
	for i := range b {
		n += bits.OnesCount64(b[i].Load() &^ other[i].Load())
	}
	return uint64(n)
}

func (b bitset) count() uint64 {
	var n int
	for i := range b {
		n += bits.OnesCount64(b[i].Load())
	}
	return uint64(n)
}

// subscriptionLedger is what one subscription must receive and what it did receive, by seq.
type subscriptionLedger struct {
	spec *SubscriptionSpec
	// expected holds the seqs of events that were published successfully and match the subscription.
	expected bitset
	// received holds the seqs any stream of the subscription received.
	received bitset
	// mayLag: the subscription is slower than its share of the load by design (scenario slow); the drain does
	// not wait for it, and what it misses at the end is its backlog, not loss.
	mayLag  bool
	streams []*streamRecorder
}

// streamRecorder is one stream's share of the bookkeeping. Its lock is taken by that stream's deliveries
// and, every progress interval, by the progress reporter: there is no lock every stream contends for.
type streamRecorder struct {
	ledger *ledger
	sub    *subscriptionLedger

	mu         sync.Mutex
	total      *hdrhistogram.Histogram
	window     *hdrhistogram.Histogram
	delivered  uint64 // first receipts in the subscription
	duplicates uint64 // receipts of a seq the subscription already had (on any of its streams)
	foreign    uint64 // seqs this run never generated
	last       time.Time
}

// ledger is a run's bookkeeping: when each event was due, who must receive it, who did, how fast.
type ledger struct {
	// origin is when the ledger was made, before any stream existed; startNanos is the offset from it of
	// the moment event 0 was due (see begin). Event seq is due at that moment + seq/rate. Latency counts from
	// then, not from when the publisher got round to sending it, so a stall of the publisher or the system
	// shows. (An atomic offset: streams read it from goroutines that already run when publishing begins.)
	origin     time.Time
	startNanos atomic.Int64
	// nanosPerEvent is 1e9/rate.
	nanosPerEvent float64
	events        uint64
	// warmupEvents: the latencies of events below this seq are not recorded (their loss still counts).
	warmupEvents uint64

	subs    []*subscriptionLedger
	streams []*streamRecorder

	// expectedDeliveries counts (event, subscription) pairs published successfully, for progress and drain.
	expectedDeliveries atomic.Uint64
	// expectedSteady is expectedDeliveries without the subscriptions that may lag.
	expectedSteady atomic.Uint64
}

func newLedger(topology Topology, events uint64, rate float64, warmup time.Duration) *ledger {
	l := &ledger{
		origin:        time.Now(),
		nanosPerEvent: float64(time.Second) / rate,
		events:        events,
		warmupEvents:  min(events, uint64(warmup.Seconds()*rate)),
	}
	for i := range topology.Subscriptions {
		spec := &topology.Subscriptions[i]
		sub := &subscriptionLedger{
			spec:     spec,
			expected: newBitset(events),
			received: newBitset(events),
			mayLag:   spec.ProcessingDelay > 0,
		}
		for range max(spec.Streams, 1) {
			st := &streamRecorder{ledger: l, sub: sub, total: newHistogram(), window: newHistogram()}
			sub.streams = append(sub.streams, st)
			l.streams = append(l.streams, st)
		}
		l.subs = append(l.subs, sub)
	}
	return l
}

// begin makes now the moment event 0 is due.
func (l *ledger) begin(now time.Time) { l.startNanos.Store(int64(now.Sub(l.origin))) }

// start is the moment event 0 was due.
func (l *ledger) start() time.Time { return l.origin.Add(time.Duration(l.startNanos.Load())) }

// due is when event seq was due.
func (l *ledger) due(seq uint64) time.Time {
	return l.start().Add(l.dueAfterStart(seq))
}

// dueAfterStart is how long after the start event seq was due.
func (l *ledger) dueAfterStart(seq uint64) time.Duration {
	return time.Duration(float64(seq) * l.nanosPerEvent)
}

// dueBy is how many events were due at now (seqs 0 … dueBy-1), at most the run's events.
func (l *ledger) dueBy(now time.Time) uint64 {
	elapsed := now.Sub(l.start())
	if elapsed < 0 {
		return 0
	}
	return min(l.events, uint64(float64(elapsed)/l.nanosPerEvent)+1)
}

// published records events the system accepted: each subscription that matches one must receive it.
func (l *ledger) published(events []Event) {
	var all, steady uint64
	for i := range events {
		ev := &events[i]
		for _, sub := range l.subs {
			if !sub.spec.Matches(ev) {
				continue
			}
			sub.expected.add(ev.Seq)
			all++
			if !sub.mayLag {
				steady++
			}
		}
	}
	l.expectedDeliveries.Add(all)
	l.expectedSteady.Add(steady)
}

// deliver is a stream's Delivery callback.
func (st *streamRecorder) deliver(d Delivery) {
	l := st.ledger
	if d.Seq >= l.events {
		st.mu.Lock()
		st.foreign++
		st.mu.Unlock()
		return
	}
	duplicate := st.sub.received.add(d.Seq)
	latency := d.ReceivedAt.Sub(l.due(d.Seq)).Microseconds()
	latency = min(max(latency, histogramMin), histogramMax)
	st.mu.Lock()
	defer st.mu.Unlock()
	if d.ReceivedAt.After(st.last) {
		st.last = d.ReceivedAt
	}
	if duplicate {
		st.duplicates++
		return
	}
	st.delivered++
	if d.Seq >= l.warmupEvents {
		// Within the histogram's range by the clamp above: RecordValue cannot fail.
		_ = st.total.RecordValue(latency)
		_ = st.window.RecordValue(latency)
	}
}

// counts are a snapshot of the stream recorders' counters.
type counts struct {
	delivered, steadyDelivered, duplicates, foreign uint64
	last                                            time.Time
}

func (l *ledger) counts() counts {
	var c counts
	for _, st := range l.streams {
		st.mu.Lock()
		c.delivered += st.delivered
		if !st.sub.mayLag {
			c.steadyDelivered += st.delivered
		}
		c.duplicates += st.duplicates
		c.foreign += st.foreign
		if st.last.After(c.last) {
			c.last = st.last
		}
		st.mu.Unlock()
	}
	return c
}

// takeWindow merges and resets the streams' window histograms: the latencies recorded since the last call.
func (l *ledger) takeWindow() *hdrhistogram.Histogram {
	merged := newHistogram()
	for _, st := range l.streams {
		st.mu.Lock()
		merged.Merge(st.window)
		st.window.Reset()
		st.mu.Unlock()
	}
	return merged
}

// steadyComplete reports whether every subscription that must keep up received every event it must. Counts
// answer quickly; the bitsets confirm, since a delivery of an event whose Publish failed counts too.
func (l *ledger) steadyComplete() bool {
	if l.counts().steadyDelivered < l.expectedSteady.Load() {
		return false
	}
	for _, sub := range l.subs {
		if !sub.mayLag && sub.expected.countAndNot(sub.received) > 0 {
			return false
		}
	}
	return true
}
