package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// conformanceDriver is what the suite needs from a driver's test file.
type conformanceDriver struct {
	// newBroker returns a broker with fresh storage; the test's cleanup closes it.
	newBroker func(t *testing.T) Broker
	// reopen closes b and returns a broker on the same storage. Nil skips the durability cases.
	reopen func(t *testing.T, b Broker) Broker
	// routesByWorkflow: the driver leaves out every record not meant for a consumer's workflow and
	// delivers each record once to a consumer without one, so the routing case asserts exactly the
	// records a subscription wants instead of at least them.
	routesByWorkflow bool
}

// runConformance checks the Broker contract (broker.go) against one driver. Every case uses its own broker
// and fresh topic and subscription IDs.
func runConformance(t *testing.T, d conformanceDriver) {
	cases := []struct {
		name string
		run  func(t *testing.T, d conformanceDriver)
	}{
		{"every published record is received with its content intact", testPublishReceiveIntact},
		{"records of one partition arrive in publish order", testOrderPerPartition},
		{"an acknowledged record is not delivered again", testAckedNotRedelivered},
		{"an unacknowledged record comes back after the ack deadline as attempt 2", testRedeliveryAfterDeadline},
		{"a nacked record comes back promptly", testNackRedeliversPromptly},
		{"closing a consumer hands its unacknowledged records to another at once", testCloseReleasesRecords},
		{"two consumers of one subscription share its records without losing any", testConsumersShare},
		{"every subscription receives every record", testSubscriptionsEachGetAll},
		{"a subscription's start time skips older records", testStartTimeSkipsOlder},
		{"EnsureTopic is idempotent and grows partitions", testEnsureTopicGrows},
		{"DeleteTopic removes the topic's records", testDeleteTopic},
		{"DeleteSubscription forgets the subscription's position", testDeleteSubscription},
		{"a consumer never holds more than MaxUnacked records", testMaxUnacked},
		{"records from many concurrent publishers are all stored", testConcurrentPublishers},
		{"unknown and repeated acknowledgements are ignored", testUnknownAcksIgnored},
		{"calls after Close return ErrClosed", testClosedBroker},
		{"published records survive closing and reopening the broker", testDurableAcrossReopen},
		{"latest views keep the newest value per key", testLatestViews},
		{"a consumer with a workflow receives the records for it and the broadcast ones in partition order", testRoutingByWorkflow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, d)
		})
	}
	runSeekConformance(t, d)
}

const conformanceTenant = "conformance-tenant"

// waitTimeout bounds every wait for something that should happen; generous for -race on 2 cores.
const waitTimeout = 20 * time.Second

func newTopic(t *testing.T, b Broker, partitions int) TopicRef {
	t.Helper()
	ref := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "portfolio/state/updated", Partitions: partitions}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.EnsureTopic(ctx, ref); err != nil {
		t.Fatalf("EnsureTopic(%d partitions): %v", partitions, err)
	}
	return ref
}

func newSubscription(topic TopicRef) SubscriptionRef {
	return SubscriptionRef{TenantID: topic.TenantID, ID: uuid.NewString(), Topic: topic}
}

func subscribe(t *testing.T, b Broker, sub SubscriptionRef, opts ConsumerOptions) Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := b.Subscribe(ctx, sub, opts)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", sub.ID, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// makeRecords returns n records spread round-robin over partitions, with event IDs prefix-0, prefix-1, …
func makeRecords(prefix string, n, partitions int) []Record {
	records := make([]Record, n)
	for i := range records {
		p := i % partitions
		records[i] = Record{
			Partition: p,
			Key:       fmt.Sprintf("portfolio-%d.state.update", p),
			EventID:   fmt.Sprintf("%s-%d", prefix, i),
			Value:     fmt.Appendf(nil, `{"event":"%s-%d","payload":"%s"}`, prefix, i, bytes.Repeat([]byte{'x'}, i%97)),
		}
	}
	return records
}

func publish(t *testing.T, b Broker, topic TopicRef, records []Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.Publish(ctx, topic, records); err != nil {
		t.Fatalf("Publish(%d records): %v", len(records), err)
	}
}

// receiveN receives until n deliveries arrived (acking them when ack is set) or fails after waitTimeout.
func receiveN(t *testing.T, c Consumer, n int, ack bool) []Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var got []Delivery
	for len(got) < n {
		batch, err := c.Receive(ctx, n-len(got))
		if err != nil {
			t.Fatalf("Receive after %d of %d deliveries: %v", len(got), n, err)
		}
		if len(batch) > n-len(got) {
			t.Fatalf("Receive(max %d) returned %d deliveries", n-len(got), len(batch))
		}
		if ack {
			if err := c.Ack(ctx, handles(batch)...); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
		got = append(got, batch...)
	}
	return got
}

// expectNoDelivery fails if c delivers anything within d. Waiting out d is the behaviour under test.
func expectNoDelivery(t *testing.T, c Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	batch, err := c.Receive(ctx, 100)
	if err == nil {
		t.Fatalf("expected no delivery within %v, got %d, first %q (attempt %d)", d, len(batch), batch[0].EventID, batch[0].Attempt)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive while nothing is due: got error %v, want context deadline exceeded", err)
	}
}

func handles(ds []Delivery) []AckHandle {
	out := make([]AckHandle, len(ds))
	for i, d := range ds {
		out[i] = d.Handle
	}
	return out
}

func eventIDs(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.EventID
	}
	sort.Strings(out)
	return out
}

func sortedIDs(records []Record) []string {
	out := make([]string, len(records))
	for i, r := range records {
		out[i] = r.EventID
	}
	sort.Strings(out)
	return out
}

func assertSameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d event IDs, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: event IDs differ at %d: got %q, want %q", what, i, got[i], want[i])
		}
	}
}

func testPublishReceiveIntact(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 3)
	records := makeRecords("intact", 60, 3)
	records[0].Value = nil
	records[1].Value = bytes.Repeat([]byte{0, 1, 2, 255}, 64<<10) // 256 KiB of binary
	records[2].Key = "pörtfolio/ключ with spaces"
	publishedAfter := time.Now().Add(-time.Second)
	publish(t, b, topic, records[:30])
	publish(t, b, topic, records[30:])
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	got := receiveN(t, c, len(records), true)

	want := map[string]Record{}
	for _, r := range records {
		want[r.EventID] = r
	}
	tokens := map[string]bool{}
	for _, dl := range got {
		w, ok := want[dl.EventID]
		if !ok {
			t.Fatalf("received unknown or duplicate event %q", dl.EventID)
		}
		delete(want, dl.EventID)
		if dl.Partition != w.Partition || dl.Key != w.Key || !bytes.Equal(dl.Value, w.Value) {
			t.Errorf("event %q: got partition %d key %q value %d bytes, want partition %d key %q value %d bytes",
				dl.EventID, dl.Partition, dl.Key, len(dl.Value), w.Partition, w.Key, len(w.Value))
		}
		if dl.Attempt != 1 {
			t.Errorf("event %q: first delivery has Attempt %d, want 1", dl.EventID, dl.Attempt)
		}
		if dl.PublishTime.Before(publishedAfter) || dl.PublishTime.After(time.Now().Add(time.Second)) {
			t.Errorf("event %q: PublishTime %v is not the time it was stored", dl.EventID, dl.PublishTime)
		}
		if dl.Handle.Token == "" || tokens[dl.Handle.Token] {
			t.Errorf("event %q: ack token %q is empty or not unique", dl.EventID, dl.Handle.Token)
		}
		tokens[dl.Handle.Token] = true
	}
}

func testOrderPerPartition(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	const partitions = 4
	topic := newTopic(t, b, partitions)
	records := makeRecords("order", 800, partitions)
	// Several calls, each of them in order, one after the other.
	for i := 0; i < len(records); i += 100 {
		publish(t, b, topic, records[i:i+100])
	}
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	got := receiveN(t, c, len(records), true)
	last := map[int]int{}
	for _, dl := range got {
		var n int
		if _, err := fmt.Sscanf(dl.EventID, "order-%d", &n); err != nil {
			t.Fatalf("unexpected event id %q", dl.EventID)
		}
		if prev, ok := last[dl.Partition]; ok && n <= prev {
			t.Fatalf("partition %d: event order-%d delivered after order-%d", dl.Partition, n, prev)
		}
		last[dl.Partition] = n
	}
}

func testAckedNotRedelivered(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	publish(t, b, topic, makeRecords("acked", 10, 2))
	const deadline = 400 * time.Millisecond
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: deadline})
	receiveN(t, c, 10, true)
	expectNoDelivery(t, c, 3*deadline)
}

func testRedeliveryAfterDeadline(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 1)
	records := makeRecords("late", 3, 1)
	publish(t, b, topic, records)
	const deadline = 500 * time.Millisecond
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: deadline})
	first := receiveN(t, c, 3, false)
	deliveredAt := time.Now()
	again := receiveN(t, c, 3, true)
	if waited := time.Since(deliveredAt); waited < deadline*8/10 {
		t.Errorf("unacknowledged records came back after %v, before the %v ack deadline", waited, deadline)
	}
	assertSameIDs(t, "redelivered records", eventIDs(again), eventIDs(first))
	for _, dl := range again {
		// At least 2: on a loaded machine the first redelivery can itself pass the deadline before the ack.
		if dl.Attempt < 2 {
			t.Errorf("event %q redelivered with Attempt %d, want 2 or more", dl.EventID, dl.Attempt)
		}
	}
}

func testNackRedeliversPromptly(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 1)
	publish(t, b, topic, makeRecords("nack", 1, 1))
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: time.Minute})
	first := receiveN(t, c, 1, false)
	if err := c.Nack(context.Background(), first[0].Handle); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	nackedAt := time.Now()
	again := receiveN(t, c, 1, true)
	if again[0].EventID != first[0].EventID || again[0].Attempt != 2 {
		t.Fatalf("after Nack got %q attempt %d, want %q attempt 2", again[0].EventID, again[0].Attempt, first[0].EventID)
	}
	if waited := time.Since(nackedAt); waited > 10*time.Second {
		t.Fatalf("nacked record took %v to come back", waited)
	}
}

func testCloseReleasesRecords(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	records := makeRecords("release", 40, 2)
	publish(t, b, topic, records[:20])
	publish(t, b, topic, records[20:])
	sub := newSubscription(topic)
	opts := ConsumerOptions{AckDeadline: time.Minute}
	first := subscribe(t, b, sub, opts)
	taken := receiveN(t, first, 40, false)
	if err := first.Close(); err != nil {
		t.Fatalf("Close consumer: %v", err)
	}
	// The ack deadline is a minute: anything but a prompt release fails receiveN's deadline.
	second := subscribe(t, b, sub, opts)
	got := receiveN(t, second, 40, true)
	assertSameIDs(t, "records released by the closed consumer", eventIDs(got), eventIDs(taken))
}

func testConsumersShare(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 4)
	records := makeRecords("share", 1000, 4)
	sub := newSubscription(topic)
	consumers := []Consumer{subscribe(t, b, sub, ConsumerOptions{}), subscribe(t, b, sub, ConsumerOptions{})}
	publish(t, b, topic, records)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for _, c := range consumers {
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(seen) == len(records)
				mu.Unlock()
				if done {
					cancel() // wake the other consumer
					return
				}
				batch, err := c.Receive(ctx, 50)
				if err != nil {
					return
				}
				_ = c.Ack(ctx, handles(batch)...)
				mu.Lock()
				for _, dl := range batch {
					seen[dl.EventID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != len(records) {
		t.Fatalf("two consumers of one subscription received %d of %d records", len(seen), len(records))
	}
}

func testSubscriptionsEachGetAll(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	records := makeRecords("fanout", 100, 2)
	a := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	publish(t, b, topic, records)
	assertSameIDs(t, "first subscription", eventIDs(receiveN(t, a, 100, true)), sortedIDs(records))
	assertSameIDs(t, "second subscription", eventIDs(receiveN(t, c, 100, true)), sortedIDs(records))
}

func testStartTimeSkipsOlder(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 1)
	publish(t, b, topic, makeRecords("old", 5, 1))
	// The older records were stored before Publish returned, the newer ones are stored after this.
	start := time.Now()
	newer := makeRecords("new", 5, 1)
	publish(t, b, topic, newer)
	sub := newSubscription(topic)
	sub.StartTime = start
	c := subscribe(t, b, sub, ConsumerOptions{})
	assertSameIDs(t, "records at or after the start time", eventIDs(receiveN(t, c, 5, true)), sortedIDs(newer))
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func testEnsureTopicGrows(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	ctx := context.Background()
	topic := newTopic(t, b, 2)
	if err := b.EnsureTopic(ctx, topic); err != nil {
		t.Fatalf("EnsureTopic again with the same partitions: %v", err)
	}
	publish(t, b, topic, makeRecords("before", 4, 2))
	grown := topic
	grown.Partitions = 6
	if err := b.EnsureTopic(ctx, grown); err != nil {
		t.Fatalf("EnsureTopic growing 2 -> 6 partitions: %v", err)
	}
	if err := b.EnsureTopic(ctx, topic); err != nil {
		t.Fatalf("EnsureTopic with fewer partitions than the topic has: %v", err)
	}
	later := makeRecords("after", 12, 6)
	publish(t, b, grown, later)
	c := subscribe(t, b, newSubscription(grown), ConsumerOptions{})
	got := receiveN(t, c, 16, true)
	partitions := map[int]bool{}
	for _, dl := range got {
		partitions[dl.Partition] = true
	}
	if !partitions[5] {
		t.Fatalf("no record delivered from the new partition 5; partitions seen %v", partitions)
	}
}

func testDeleteTopic(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	ctx := context.Background()
	topic := newTopic(t, b, 1)
	publish(t, b, topic, makeRecords("gone", 5, 1))
	if err := b.DeleteTopic(ctx, topic); err != nil {
		t.Fatalf("DeleteTopic: %v", err)
	}
	if err := b.DeleteTopic(ctx, topic); err != nil {
		t.Fatalf("DeleteTopic of a deleted topic: %v", err)
	}
	if err := b.EnsureTopic(ctx, topic); err != nil {
		t.Fatalf("EnsureTopic after delete: %v", err)
	}
	fresh := makeRecords("fresh", 2, 1)
	publish(t, b, topic, fresh)
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	assertSameIDs(t, "records of the recreated topic", eventIDs(receiveN(t, c, 2, true)), sortedIDs(fresh))
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func testDeleteSubscription(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	ctx := context.Background()
	topic := newTopic(t, b, 1)
	records := makeRecords("resub", 5, 1)
	publish(t, b, topic, records)
	sub := newSubscription(topic)
	c := subscribe(t, b, sub, ConsumerOptions{})
	receiveN(t, c, 5, true)
	if err := c.Close(); err != nil {
		t.Fatalf("Close consumer: %v", err)
	}
	if err := b.DeleteSubscription(ctx, sub); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	if err := b.DeleteSubscription(ctx, sub); err != nil {
		t.Fatalf("DeleteSubscription of a deleted subscription: %v", err)
	}
	// Recreated from scratch, the subscription starts at the earliest record again.
	again := subscribe(t, b, sub, ConsumerOptions{})
	assertSameIDs(t, "records of the recreated subscription", eventIDs(receiveN(t, again, 5, true)), sortedIDs(records))
}

func testMaxUnacked(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	publish(t, b, topic, makeRecords("bounded", 30, 2))
	const maxUnacked = 5
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{MaxUnacked: maxUnacked})
	held := receiveN(t, c, maxUnacked, false)
	expectNoDelivery(t, c, 500*time.Millisecond)

	if err := c.Ack(context.Background(), held[0].Handle, held[1].Handle); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	more := receiveN(t, c, 2, false)
	expectNoDelivery(t, c, 300*time.Millisecond)
	if err := c.Nack(context.Background(), more[0].Handle); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	receiveN(t, c, 1, false)
	expectNoDelivery(t, c, 300*time.Millisecond)
}

func testConcurrentPublishers(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	const partitions, publishers, perPublisher = 4, 32, 40
	topic := newTopic(t, b, partitions)
	var want []string
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		records := makeRecords(fmt.Sprintf("pub%d", p), perPublisher, partitions)
		want = append(want, sortedIDs(records)...)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			// Small calls, as concurrent producers make them.
			for i := 0; i < len(records); i += 4 {
				if err := b.Publish(ctx, topic, records[i:i+4]); err != nil {
					errs <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	sort.Strings(want)
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	assertSameIDs(t, "records of concurrent publishers", eventIDs(receiveN(t, c, len(want), true)), want)
}

func testUnknownAcksIgnored(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 1)
	publish(t, b, topic, makeRecords("idem", 2, 1))
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: time.Minute})
	got := receiveN(t, c, 2, false)
	ctx := context.Background()
	for _, h := range []AckHandle{{Token: "not-a-token"}, {Token: ""}, {Token: "999999-0"}} {
		if err := c.Ack(ctx, h); err != nil {
			t.Fatalf("Ack of unknown handle %q: %v", h.Token, err)
		}
		if err := c.Nack(ctx, h); err != nil {
			t.Fatalf("Nack of unknown handle %q: %v", h.Token, err)
		}
	}
	if err := c.Ack(ctx, got[0].Handle, got[0].Handle); err != nil {
		t.Fatalf("Ack of one handle twice: %v", err)
	}
	if err := c.Nack(ctx, got[0].Handle); err != nil {
		t.Fatalf("Nack of an acknowledged handle: %v", err)
	}
	if err := c.Ack(ctx, got[1].Handle); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func testClosedBroker(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	topic := newTopic(t, b, 1)
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	receiveErr := make(chan error, 1)
	go func() {
		_, err := c.Receive(context.Background(), 1)
		receiveErr <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-receiveErr:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Receive after broker Close: got %v, want ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("blocked Receive did not return after broker Close")
	}
	ctx := context.Background()
	if err := b.Publish(ctx, topic, makeRecords("late", 1, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: got %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, newSubscription(topic), ConsumerOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close: got %v, want ErrClosed", err)
	}
	if err := b.EnsureTopic(ctx, topic); !errors.Is(err, ErrClosed) {
		t.Errorf("EnsureTopic after Close: got %v, want ErrClosed", err)
	}
	if _, err := c.Receive(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Receive after Close: got %v, want ErrClosed", err)
	}
}

func testDurableAcrossReopen(t *testing.T, d conformanceDriver) {
	if d.reopen == nil {
		t.Skip("driver has no reopen hook")
	}
	b := d.newBroker(t)
	topic := newTopic(t, b, 2)
	consumed := makeRecords("consumed", 20, 2)
	untouched := makeRecords("untouched", 20, 2)
	publish(t, b, topic, consumed)
	sub := newSubscription(topic)
	c := subscribe(t, b, sub, ConsumerOptions{AckDeadline: time.Minute})
	got := receiveN(t, c, 20, false)
	sort.Slice(got, func(i, j int) bool { return got[i].EventID < got[j].EventID })
	if err := c.Ack(context.Background(), handles(got[:10])...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	publish(t, b, topic, untouched)

	b = d.reopen(t, b)
	c = subscribe(t, b, sub, ConsumerOptions{AckDeadline: time.Minute})
	// Acknowledged records may come again (at least once); every unacknowledged one must.
	want := map[string]bool{}
	for _, dl := range got[10:] {
		want[dl.EventID] = true
	}
	for _, r := range untouched {
		want[r.EventID] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for len(want) > 0 {
		batch, err := c.Receive(ctx, 100)
		if err != nil {
			t.Fatalf("after reopen, %d unacknowledged records never came back (e.g. %v): %v", len(want), firstKey(want), err)
		}
		_ = c.Ack(ctx, handles(batch)...)
		for _, dl := range batch {
			delete(want, dl.EventID)
		}
	}
}

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

func testLatestViews(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	views, ok := b.(LatestViews)
	if !ok {
		t.Skip("driver does not offer LatestViews")
	}
	ctx := context.Background()
	cases := []struct {
		name, tenant, view, key string
		values                  [][]byte
	}{
		{"one put", "tenant-a", "state", "PF-1", [][]byte{[]byte(`{"v":1}`)}},
		{"overwrite keeps the newest", "tenant-a", "state", "PF-2", [][]byte{[]byte("old"), []byte("newer"), []byte("newest")}},
		{"same key in another view", "tenant-a", "performance", "PF-2", [][]byte{[]byte("perf")}},
		{"same key in another tenant", "tenant-b", "state", "PF-2", [][]byte{[]byte("other tenant")}},
		{"key with reserved characters", "tenant-a", "state", "pf.1 *>/ä=", [][]byte{[]byte("odd key")}},
		{"empty value", "tenant-a", "state", "PF-empty", [][]byte{{}}},
	}
	for _, tc := range cases {
		for _, v := range tc.values {
			if err := views.PutLatest(ctx, tc.tenant, tc.view, tc.key, v); err != nil {
				t.Fatalf("%s: PutLatest: %v", tc.name, err)
			}
		}
	}
	check := func(views LatestViews, when string) {
		for _, tc := range cases {
			got, ok, err := views.GetLatest(ctx, tc.tenant, tc.view, tc.key)
			want := tc.values[len(tc.values)-1]
			if err != nil || !ok || !bytes.Equal(got, want) {
				t.Errorf("%s, %s: GetLatest = %q, %v, %v; want %q, true, nil", when, tc.name, got, ok, err, want)
			}
		}
		if got, ok, err := views.GetLatest(ctx, "tenant-a", "state", "never-put"); err != nil || ok {
			t.Errorf("%s: GetLatest of a missing key = %q, %v, %v; want not found", when, got, ok, err)
		}
		if got, ok, err := views.GetLatest(ctx, "tenant-never-seen", "state", "PF-1"); err != nil || ok {
			t.Errorf("%s: GetLatest in an unknown tenant = %q, %v, %v; want not found", when, got, ok, err)
		}
	}
	check(views, "before reopen")
	if d.reopen != nil {
		reopened, ok := d.reopen(t, b).(LatestViews)
		if !ok {
			t.Fatal("reopened broker lost LatestViews")
		}
		check(reopened, "after reopen")
	}
}

// routedRecords returns n records over partitions whose target workflows cycle through none, [A], [B]
// and [A, B].
func routedRecords(prefix string, n, partitions int, a, b string) []Record {
	records := makeRecords(prefix, n, partitions)
	targets := [][]string{nil, {a}, {b}, {a, b}}
	for i := range records {
		records[i].TargetWorkflows = targets[(i/partitions)%len(targets)]
	}
	return records
}

// wantedBy lists the records a subscription of workflow must receive: all of them for an empty workflow.
func wantedBy(records []Record, workflow string) []Record {
	var out []Record
	for _, r := range records {
		if workflow == "" || len(r.TargetWorkflows) == 0 || slices.Contains(r.TargetWorkflows, workflow) {
			out = append(out, r)
		}
	}
	return out
}

// receiveWanted receives (and acks) until every wanted record arrived; it returns every delivery, those
// a routing driver was free to leave out included.
func receiveWanted(t *testing.T, c Consumer, wanted []Record) []Delivery {
	t.Helper()
	missing := map[string]bool{}
	for _, r := range wanted {
		missing[r.EventID] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var got []Delivery
	for len(missing) > 0 {
		batch, err := c.Receive(ctx, 100)
		if err != nil {
			t.Fatalf("%d wanted records never arrived (e.g. %s): %v", len(missing), firstKey(missing), err)
		}
		if err := c.Ack(ctx, handles(batch)...); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		for _, dl := range batch {
			delete(missing, dl.EventID)
		}
		got = append(got, batch...)
	}
	return got
}

// assertWantedInOrder checks that the first delivery of each wanted record came in publish order within
// its partition.
func assertWantedInOrder(t *testing.T, what string, got []Delivery, wanted []Record) {
	t.Helper()
	position := map[string]int{}
	for i, r := range wanted {
		position[r.EventID] = i
	}
	seen := map[string]bool{}
	last := map[int]int{}
	for _, dl := range got {
		pos, ok := position[dl.EventID]
		if !ok || seen[dl.EventID] {
			continue
		}
		seen[dl.EventID] = true
		if prev, ok := last[dl.Partition]; ok && pos < prev {
			t.Fatalf("%s: partition %d: %s delivered after %s, which was published after it", what, dl.Partition, dl.EventID, wanted[prev].EventID)
		}
		last[dl.Partition] = pos
	}
}

func testRoutingByWorkflow(t *testing.T, d conformanceDriver) {
	b := d.newBroker(t)
	const partitions, workflowA, workflowB = 3, "wf-a", "wf-b"
	topic := newTopic(t, b, partitions)
	records := routedRecords("routed", 120, partitions, workflowA, workflowB)
	// One call mixes broadcast and targeted records of one partition; the others are smaller.
	publish(t, b, topic, records[:60])
	for i := 60; i < len(records); i += 20 {
		publish(t, b, topic, records[i:i+20])
	}
	cases := []struct {
		name, workflow string
		ordered        bool
	}{
		{"workflow A", workflowA, true},
		{"workflow B", workflowB, true},
		// Without a workflow a routing driver may reorder records routed to different workflows.
		{"no workflow", "", !d.routesByWorkflow},
	}
	for _, tc := range cases {
		sub := newSubscription(topic)
		sub.Workflow = tc.workflow
		c := subscribe(t, b, sub, ConsumerOptions{MaxUnacked: 1000})
		wanted := wantedBy(records, tc.workflow)
		got := receiveWanted(t, c, wanted)
		if tc.ordered {
			assertWantedInOrder(t, tc.name, got, wanted)
		}
		if !d.routesByWorkflow {
			continue
		}
		expectNoDelivery(t, c, 300*time.Millisecond)
		assertSameIDs(t, tc.name+": records delivered by a routing driver", eventIDs(got), sortedIDs(wanted))
	}
}
