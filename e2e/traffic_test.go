package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
)

// The traffic tests publish a steady stream of events over several routing keys while something fails, and
// check at-least-once delivery and order per key from the ids of what arrives. An event id is
// "<key>:<sequence>" (key "k03", sequence counting from 1 per key), so a delivery tells its key and place.

// ledger records what a traffic test published (only events whose Publish returned OK) and what its
// subscribers received. It is safe for concurrent use.
type ledger struct {
	checkOrder bool
	mu         sync.Mutex
	// reported: report ran.
	reported bool
	// published: event id → the partition PDS put it in.
	published map[string]int32
	// deliveries: event id → how often it was delivered, over all streams.
	deliveries map[string]int
	// deliveredBy: node name → ids that node delivered.
	deliveredBy map[string]map[string]bool
	// lastFirst: routing key → the highest sequence delivered for the first time so far.
	lastFirst map[string]int
	// orderViolations describe first deliveries that came after a later event of their key.
	orderViolations []string
	// redelivered counts deliveries of an id delivered before.
	redelivered int
	// maxPartition is the highest partition a Publish answered with.
	maxPartition int32
	// failedPublishes counts Publish calls that returned an error (their events are not in published).
	failedPublishes int
}

// newLedger returns an empty ledger. checkOrder: report fails the test when a key's first deliveries went
// backwards. A test that stops before it called report still gets the counts logged.
func newLedger(t *testing.T, checkOrder bool) *ledger {
	l := &ledger{
		checkOrder:  checkOrder,
		published:   map[string]int32{},
		deliveries:  map[string]int{},
		deliveredBy: map[string]map[string]bool{},
		lastFirst:   map[string]int{},
	}
	t.Cleanup(func() {
		l.mu.Lock()
		reported := l.reported
		l.mu.Unlock()
		if !reported {
			t.Log("the test stopped before publishing ended; undelivered events may still have been on their way")
			l.log(t)
		}
	})
	return l
}

// eventID names the event of key with sequence seq.
func eventID(key string, seq int) string { return fmt.Sprintf("%s:%07d", key, seq) }

// parseEventID splits an id made by eventID.
func parseEventID(id string) (key string, seq int, err error) {
	key, seqText, ok := strings.Cut(id, ":")
	if !ok {
		return "", 0, fmt.Errorf("event id %q was not published by this test", id)
	}
	seq, err = strconv.Atoi(seqText)
	return key, seq, err
}

func (l *ledger) recordPublished(events []*pdsv1.PublishedEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range events {
		l.published[ev.GetEventId()] = ev.GetPartition()
		l.maxPartition = max(l.maxPartition, ev.GetPartition())
	}
}

func (l *ledger) recordFailedPublish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failedPublishes++
}

// recordDelivered records events one node's stream delivered, in the order it delivered them.
func (l *ledger) recordDelivered(node string, events []*pdsv1.DeliveredEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deliveredBy[node] == nil {
		l.deliveredBy[node] = map[string]bool{}
	}
	for _, ev := range events {
		id := ev.GetEvent().GetEventId()
		l.deliveredBy[node][id] = true
		l.deliveries[id]++
		if l.deliveries[id] > 1 {
			l.redelivered++
			continue
		}
		key, seq, err := parseEventID(id)
		if err != nil {
			l.orderViolations = append(l.orderViolations, err.Error())
			continue
		}
		if last := l.lastFirst[key]; seq < last {
			l.orderViolations = append(l.orderViolations,
				fmt.Sprintf("%s: first delivery of %s (on %s) after %s", key, id, node, eventID(key, last)))
			continue
		}
		l.lastFirst[key] = seq
	}
}

// publishedCount is how many events were published with an OK answer so far.
func (l *ledger) publishedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.published)
}

// deliveredCount is how many distinct events node delivered ("" for all nodes).
func (l *ledger) deliveredCount(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if node == "" {
		return len(l.deliveries)
	}
	return len(l.deliveredBy[node])
}

// deliveredIDs is a copy of the ids node delivered.
func (l *ledger) deliveredIDs(node string) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.deliveredBy[node])
}

func (l *ledger) highestPartition() int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxPartition
}

// lost returns the ids of published events not delivered yet, sorted.
func (l *ledger) lost() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var lost []string
	for id := range l.published {
		if l.deliveries[id] == 0 {
			lost = append(lost, id)
		}
	}
	slices.Sort(lost)
	return lost
}

// waitAllDelivered polls until every published event was delivered or timeout passes.
func (l *ledger) waitAllDelivered(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(l.lost()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// report logs "published=N delivered=N redelivered=N lost=N" and fails the test when an event was lost or,
// with checkOrder, when a key's first deliveries went backwards. Call it once publishing stopped and the
// deliveries were awaited.
func (l *ledger) report(t *testing.T) {
	t.Helper()
	l.log(t)
	lost := l.lost()
	if len(lost) > 0 {
		t.Errorf("%d events whose Publish returned OK were never delivered, e.g. %v", len(lost), lost[:min(len(lost), 20)])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reported = true
	if l.checkOrder && len(l.orderViolations) > 0 {
		t.Errorf("order per routing key broken %d times, e.g. %v", len(l.orderViolations), l.orderViolations[:min(len(l.orderViolations), 10)])
	}
}

// log logs the counts.
func (l *ledger) log(t *testing.T) {
	t.Helper()
	lost := l.lost()
	l.mu.Lock()
	defer l.mu.Unlock()
	unpublished := 0
	for id := range l.deliveries {
		if _, ok := l.published[id]; !ok {
			unpublished++
		}
	}
	t.Logf("published=%d delivered=%d redelivered=%d lost=%d (failed Publish calls=%d, delivered events of failed calls=%d, highest partition=%d, order violations=%d)",
		len(l.published), len(l.published)-len(lost), l.redelivered, len(lost), l.failedPublishes, unpublished, l.maxPartition, len(l.orderViolations))
}

// trafficKeys is how many routing keys a traffic test spreads its events over.
const trafficKeys = 16

// publishCallTimeout bounds one Publish call of a traffic test; a broker that is down fails the call then.
const publishCallTimeout = 10 * time.Second

// publisher publishes batches of trafficKeys events, one per key, every interval until stopped.
type publisher struct {
	t      *testing.T
	client pdsv1connect.PortfolioStreamClient
	ledger *ledger
	// retry: a failed batch is published again with the same event ids until it succeeds (a producer's
	// retry); otherwise a failed Publish fails the test.
	retry bool
	// stopping is closed to stop publishing; a call under way is finished first, so that every event the
	// test published is either confirmed or counted as failed.
	stopping chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	// lastErr is the error of the latest failed Publish call ("" when none failed).
	lastErr atomic.Value
}

func startPublisher(t *testing.T, client pdsv1connect.PortfolioStreamClient, l *ledger, interval time.Duration, retry bool) *publisher {
	p := &publisher{t: t, client: client, ledger: l, retry: retry, stopping: make(chan struct{}), done: make(chan struct{})}
	go p.run(interval)
	t.Cleanup(p.stop)
	return p
}

// stop ends publishing and waits until the publisher's last call returned.
func (p *publisher) stop() {
	p.stopOnce.Do(func() { close(p.stopping) })
	<-p.done
}

func (p *publisher) run(interval time.Duration) {
	defer close(p.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for seq := 1; ; seq++ {
		events := make([]*pdsv1.PortfolioDistribution, trafficKeys)
		for k := range events {
			key := fmt.Sprintf("k%02d", k)
			ev := portfolioEvent("portfolio_"+key, float64(seq))
			ev.EventId = eventID(key, seq)
			events[k] = ev
		}
		for {
			err := p.publishOnce(events)
			if err == nil {
				break
			}
			p.ledger.recordFailedPublish()
			p.lastErr.Store(err.Error())
			if !p.retry {
				p.t.Errorf("Publish batch %d: %v", seq, err)
				return
			}
			select {
			case <-p.stopping:
				return
			case <-ticker.C:
			}
		}
		select {
		case <-p.stopping:
			return
		case <-ticker.C:
		}
	}
}

func (p *publisher) publishOnce(events []*pdsv1.PortfolioDistribution) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishCallTimeout)
	defer cancel()
	resp, err := p.client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events}))
	if err != nil {
		return err
	}
	if got := len(resp.Msg.GetEvents()); got != len(events) {
		return fmt.Errorf("Publish of %d events answered for %d", len(events), got)
	}
	p.ledger.recordPublished(resp.Msg.GetEvents())
	return nil
}

// trafficSubscriber streams one subscription from one node into the ledger and acknowledges what it
// receives while acking is on.
type trafficSubscriber struct {
	node   string
	client pdsv1connect.PortfolioStreamClient
	subID  string
	ledger *ledger
	// acking: acknowledge delivered events; when off, deliveries stay unacknowledged.
	acking atomic.Bool
	// reconnect: open the stream again when it ends (a client riding out a broker outage).
	reconnect bool
	// reconnects counts streams opened after the first.
	reconnects atomic.Int64
	// lastErr is why the latest stream ended.
	lastErr atomic.Value
	cancel  context.CancelFunc
	done    chan struct{}
}

func startTrafficSubscriber(t *testing.T, node string, client pdsv1connect.PortfolioStreamClient, subID string, l *ledger, reconnect bool) *trafficSubscriber {
	ctx, cancel := context.WithCancel(context.Background())
	s := &trafficSubscriber{node: node, client: client, subID: subID, ledger: l, reconnect: reconnect, cancel: cancel, done: make(chan struct{})}
	s.acking.Store(true)
	go s.run(ctx)
	t.Cleanup(s.stop)
	return s
}

func (s *trafficSubscriber) stop() {
	s.cancel()
	<-s.done
}

func (s *trafficSubscriber) run(ctx context.Context) {
	defer close(s.done)
	for first := true; ; first = false {
		if !first {
			s.reconnects.Add(1)
		}
		err := s.stream(ctx)
		s.lastErr.Store(fmt.Sprint(err))
		if ctx.Err() != nil || !s.reconnect {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *trafficSubscriber) stream(ctx context.Context) error {
	stream, err := s.client.StreamPortfolio(ctx, connect.NewRequest(&pdsv1.StreamRequest{SubscriptionId: s.subID}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		events := stream.Msg().GetEvents()
		s.ledger.recordDelivered(s.node, events)
		if !s.acking.Load() {
			continue
		}
		ids := make([]string, len(events))
		for i, ev := range events {
			ids[i] = ev.GetAckId()
		}
		ackCtx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := s.client.Acknowledge(ackCtx, connect.NewRequest(&pdsv1.AcknowledgeRequest{SubscriptionId: s.subID, AckIds: ids}))
		cancel()
		// A failed ack only means the events come again: the ledger counts them as redelivered.
		if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
			s.lastErr.Store("acknowledge: " + err.Error())
		}
	}
	return stream.Err()
}

// waitFor polls cond until it holds, failing the test with what, and the state details describe (if
// given), when timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, details ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			var state []string
			for _, d := range details {
				state = append(state, d())
			}
			t.Fatalf("timed out after %v waiting for %s %s", timeout, what, strings.Join(state, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
