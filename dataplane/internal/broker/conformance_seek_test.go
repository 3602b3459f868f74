package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// seekConformanceCases check the Seeker contract (broker.go). They hold for every driver: a record's
// position is judged only by what Seek promises, never by how an engine keeps cursors.
var seekConformanceCases = []struct {
	name string
	run  func(t *testing.T, d conformanceDriver)
}{
	{"seek to earliest replays acknowledged records in order", testSeekEarliestReplays},
	{"seek to latest skips the backlog", testSeekLatestSkipsBacklog},
	{"seek to a time delivers the records stored at or after it and none before", testSeekTimeSkipsOlder},
	{"seek of a subscription the broker does not have creates it at the position", testSeekCreatesSubscription},
	{"an attached consumer follows the new position after Seek returns", testSeekWithConsumerAttached},
	{"a position with no field or several fields set is rejected", testSeekRejectsBadPosition},
	{"a seek survives closing and reopening the broker", testSeekDurableAcrossReopen},
}

// runSeekConformance runs seekConformanceCases as subtests of runConformance.
func runSeekConformance(t *testing.T, d conformanceDriver) {
	for _, tc := range seekConformanceCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, d)
		})
	}
}

func seekerOf(t *testing.T, b Broker) Seeker {
	t.Helper()
	s, ok := b.(Seeker)
	if !ok {
		t.Skipf("driver %T does not implement Seeker yet", b)
	}
	return s
}

func seekTo(t *testing.T, b Broker, sub SubscriptionRef, pos SeekPosition) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := seekerOf(t, b).Seek(ctx, sub, pos); err != nil {
		t.Fatalf("Seek(%s) of subscription %s: %v", describePosition(pos), sub.ID, err)
	}
}

func describePosition(pos SeekPosition) string {
	var parts []string
	if pos.Earliest {
		parts = append(parts, "earliest")
	}
	if pos.Latest {
		parts = append(parts, "latest")
	}
	if !pos.Time.IsZero() {
		parts = append(parts, pos.Time.Format(time.RFC3339Nano))
	}
	if len(parts) == 0 {
		return "no position"
	}
	return strings.Join(parts, "+")
}

// clockSeparation is how far apart the test keeps "before" and "after" a seek time, so that engines
// stamping records with millisecond precision (Pulsar) cannot put a record on the wrong side.
const clockSeparation = 3 * time.Millisecond

// waitClockPast returns once the wall clock has passed t+clockSeparation. The clock itself is the
// condition waited for; it takes a few milliseconds.
func waitClockPast(t time.Time) {
	time.Sleep(time.Until(t.Add(clockSeparation)))
}

// assertPartitionOrder fails unless deliveries of one partition carry increasing numbers in their event
// ids (prefix-N, as makeRecords numbers them).
func assertPartitionOrder(t *testing.T, what string, deliveries []Delivery) {
	t.Helper()
	last := map[int]int{}
	for _, dl := range deliveries {
		i := strings.LastIndexByte(dl.EventID, '-')
		var n int
		if _, err := fmt.Sscanf(dl.EventID[i+1:], "%d", &n); i < 0 || err != nil {
			t.Fatalf("%s: unexpected event id %q", what, dl.EventID)
		}
		if prev, ok := last[dl.Partition]; ok && n <= prev {
			t.Fatalf("%s: partition %d delivered %q after number %d", what, dl.Partition, dl.EventID, prev)
		}
		last[dl.Partition] = n
	}
}

func testSeekEarliestReplays(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	records := makeRecords("replay", 40, 2)
	publish(t, b, topic, records[:20])
	publish(t, b, topic, records[20:])
	sub := newSubscription(topic)
	first := subscribe(t, b, sub, ConsumerOptions{})
	receiveN(t, first, len(records), true)
	if err := first.Close(); err != nil {
		t.Fatalf("Close consumer: %v", err)
	}

	seekTo(t, b, sub, SeekPosition{Earliest: true})
	again := subscribe(t, b, sub, ConsumerOptions{})
	replayed := receiveN(t, again, len(records), true)
	assertSameIDs(t, "records replayed from the earliest", eventIDs(replayed), sortedIDs(records))
	assertPartitionOrder(t, "replayed records", replayed)
	expectNoDelivery(t, again, 500*time.Millisecond)
}

func testSeekLatestSkipsBacklog(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	sub := newSubscription(topic)
	first := subscribe(t, b, sub, ConsumerOptions{})
	publish(t, b, topic, makeRecords("backlog", 30, 2))
	// Some of the backlog is held unacknowledged when the consumer goes: it counts as acknowledged too.
	receiveN(t, first, 5, false)
	if err := first.Close(); err != nil {
		t.Fatalf("Close consumer: %v", err)
	}

	seekTo(t, b, sub, SeekPosition{Latest: true})
	c := subscribe(t, b, sub, ConsumerOptions{})
	fresh := makeRecords("fresh", 6, 2)
	publish(t, b, topic, fresh)
	assertSameIDs(t, "records after a seek to the latest", eventIDs(receiveN(t, c, len(fresh), true)), sortedIDs(fresh))
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func testSeekTimeSkipsOlder(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 3)
	older := makeRecords("older", 9, 3)
	publish(t, b, topic, older)
	waitClockPast(time.Now())
	at := time.Now()
	waitClockPast(at)
	newer := makeRecords("newer", 9, 3)
	publish(t, b, topic, newer)

	sub := newSubscription(topic)
	first := subscribe(t, b, sub, ConsumerOptions{})
	receiveN(t, first, len(older)+len(newer), true)
	if err := first.Close(); err != nil {
		t.Fatalf("Close consumer: %v", err)
	}

	seekTo(t, b, sub, SeekPosition{Time: at})
	c := subscribe(t, b, sub, ConsumerOptions{})
	got := receiveN(t, c, len(newer), true)
	assertSameIDs(t, "records stored at or after the seek time", eventIDs(got), sortedIDs(newer))
	for _, dl := range got {
		if dl.PublishTime.Before(at) {
			t.Errorf("event %q stored at %v, before the seek time %v", dl.EventID, dl.PublishTime, at)
		}
	}
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func testSeekCreatesSubscription(t *testing.T, d conformanceDriver) {
	cases := []struct {
		name string
		pos  SeekPosition
		// startAfterBacklog sets the subscription's StartTime after the backlog, so only the seek can
		// make the backlog visible; otherwise StartTime is zero, so only the seek can hide it.
		startAfterBacklog bool
		wantBacklog       bool
	}{
		{name: "earliest, where the start time would skip the backlog", pos: SeekPosition{Earliest: true}, startAfterBacklog: true, wantBacklog: true},
		{name: "latest, where no start time would deliver the backlog", pos: SeekPosition{Latest: true}, wantBacklog: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := d.newBroker(t)
			topic := newTopic(t, b, 2)
			backlog := makeRecords("backlog", 8, 2)
			publish(t, b, topic, backlog)
			sub := newSubscription(topic)
			if tc.startAfterBacklog {
				waitClockPast(time.Now())
				sub.StartTime = time.Now()
			}

			seekTo(t, b, sub, tc.pos)
			c := subscribe(t, b, sub, ConsumerOptions{})
			fresh := makeRecords("fresh", 4, 2)
			publish(t, b, topic, fresh)
			want := sortedIDs(fresh)
			if tc.wantBacklog {
				want = sortedIDs(append(append([]Record{}, backlog...), fresh...))
			}
			assertSameIDs(t, "records of the subscription Seek created", eventIDs(receiveN(t, c, len(want), true)), want)
			expectNoDelivery(t, c, 500*time.Millisecond)
		})
	}
}

func testSeekWithConsumerAttached(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	sub := newSubscription(topic)
	// The ack deadline is short so that held records would come back within the test if the seek did
	// not count them as acknowledged. One second is the shortest every engine supports.
	const deadline = time.Second
	c := subscribe(t, b, sub, ConsumerOptions{AckDeadline: deadline})
	held := makeRecords("held", 20, 2)
	publish(t, b, topic, held)
	heldDeliveries := receiveN(t, c, len(held), false)

	seekTo(t, b, sub, SeekPosition{Latest: true})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// A subscriber may still acknowledge what it got before the seek; that must not fail.
	if err := c.Ack(ctx, handles(heldDeliveries[:10])...); err != nil {
		t.Fatalf("Ack after Seek of records delivered before it: %v", err)
	}
	after := makeRecords("after", 10, 2)
	publish(t, b, topic, after)
	missing := map[string]bool{}
	for _, r := range after {
		missing[r.EventID] = true
	}
	stale := 0 // held records already on their way when Seek ran: the contract allows them
	for len(missing) > 0 {
		batch, err := c.Receive(ctx, 100)
		if err != nil {
			t.Fatalf("after Seek to the latest, %d records published afterwards never arrived (e.g. %s): %v", len(missing), firstKey(missing), err)
		}
		if err := c.Ack(ctx, handles(batch)...); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		for _, dl := range batch {
			switch {
			case strings.HasPrefix(dl.EventID, "held-"):
				stale++
			case !strings.HasPrefix(dl.EventID, "after-"):
				t.Fatalf("after Seek to the latest, the consumer received unknown record %q", dl.EventID)
			}
			delete(missing, dl.EventID)
		}
	}
	if stale > 0 {
		t.Logf("%d records from before the seek were still on their way to the consumer", stale)
	}
	// The ten held records never acknowledged are before the position: their ack deadline passes quietly.
	expectNoDelivery(t, c, 3*deadline)

	// Seek back while Receive waits: the waiting consumer replays everything.
	type result struct {
		got []Delivery
		err error
	}
	done := make(chan result, 1)
	go func() {
		var got []Delivery
		seen := map[string]bool{}
		for len(seen) < len(held)+len(after) {
			batch, err := c.Receive(ctx, 100)
			if err != nil {
				done <- result{got, fmt.Errorf("after %d of %d records: %w", len(seen), len(held)+len(after), err)}
				return
			}
			if err := c.Ack(ctx, handles(batch)...); err != nil {
				done <- result{got, fmt.Errorf("ack: %w", err)}
				return
			}
			for _, dl := range batch {
				if !seen[dl.EventID] {
					seen[dl.EventID] = true
					got = append(got, dl)
				}
			}
		}
		done <- result{got, nil}
	}()
	seekTo(t, b, sub, SeekPosition{Earliest: true})
	res := <-done
	if res.err != nil {
		t.Fatalf("consumer receiving across a Seek to the earliest: %v", res.err)
	}
	want := sortedIDs(append(append([]Record{}, held...), after...))
	got := eventIDs(res.got)
	sort.Strings(got)
	assertSameIDs(t, "records replayed to the attached consumer", got, want)
}

func testSeekRejectsBadPosition(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	seeker := seekerOf(t, b)
	topic := newTopic(t, b, 1)
	sub := newSubscription(topic)
	cases := []struct {
		name string
		pos  SeekPosition
	}{
		{"no field set", SeekPosition{}},
		{"earliest and latest", SeekPosition{Earliest: true, Latest: true}},
		{"latest and a time", SeekPosition{Latest: true, Time: time.Now()}},
		{"earliest and a time", SeekPosition{Earliest: true, Time: time.Now()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			err := seeker.Seek(ctx, sub, tc.pos)
			if err == nil {
				t.Fatalf("Seek(%s) succeeded, want an error", describePosition(tc.pos))
			}
			if errors.Is(err, ErrClosed) {
				t.Fatalf("Seek(%s): %v, want a position error", describePosition(tc.pos), err)
			}
		})
	}
}

func testSeekDurableAcrossReopen(t *testing.T, d conformanceDriver) {
	if d.reopen == nil {
		t.Skip("driver has no reopen hook")
	}
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	publish(t, b, topic, makeRecords("skipped", 10, 2))
	sub := newSubscription(topic)
	seekTo(t, b, sub, SeekPosition{Latest: true})
	fresh := makeRecords("fresh", 4, 2)
	publish(t, b, topic, fresh)

	b = d.reopen(t, b)
	c := subscribe(t, b, sub, ConsumerOptions{})
	assertSameIDs(t, "records after the seek position, read after reopening", eventIDs(receiveN(t, c, len(fresh), true)), sortedIDs(fresh))
	expectNoDelivery(t, c, 500*time.Millisecond)
}
