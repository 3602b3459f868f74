package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of ConsumerOptions, applied when a field is zero.
const (
	defaultAckDeadline = 30 * time.Second
	defaultMaxUnacked  = 1000
)

// Bounds of one read of a cursor, done when it has nothing left to hand out: up to readAheadFrames frames,
// and fewer once they hold readAheadBytes (a frame stays in memory while a record of it is held).
const (
	readAheadFrames = 256
	readAheadBytes  = 2 << 20
)

// readRetryWait is how long a Receive waits after the engine failed to answer a read, before trying again.
const readRetryWait = 100 * time.Millisecond

// ErrSubscriptionGone is returned by Receive when the subscription or its topic was deleted at the broker
// while the consumer was attached.
var ErrSubscriptionGone = errors.New("subscription deleted at the broker")

// Subscribe attaches a consumer to the subscription's cursor (broker_embedded_cursor.go), creating the
// subscription if it has no resume position yet: at its saved position, at the acknowledgement floor of
// the JetStream consumer an earlier version kept for it, or at its StartTime. A new position is saved
// before Subscribe returns.
func (b *EmbeddedBroker) Subscribe(ctx context.Context, sub SubscriptionRef, opts ConsumerOptions) (Consumer, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = defaultAckDeadline
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = defaultMaxUnacked
	}
	names := topicNames(sub.Topic)
	key := names.stream + "/" + consumerName(sub)
	// Seeks and Subscribes of one subscription run one after the other.
	changing, err := b.beginCursorChange(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	defer b.endCursorChange(key, changing)
	cur, err := b.openCursor(ctx, sub, names, key)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	c := &embeddedConsumer{
		cursor:      cur,
		ackDeadline: opts.AckDeadline,
		maxUnacked:  opts.MaxUnacked,
		closedCh:    make(chan struct{}),
	}
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if cur.gone {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, ErrSubscriptionGone)
	}
	if b.isClosed() {
		return nil, ErrClosed
	}
	if sub.Workflow != cur.workflow {
		cur.setWorkflowLocked(sub.Workflow, names)
	}
	cur.attachLocked(c)
	return c, nil
}

// openCursor returns the subscription's cursor, creating it (and the subscription) if this process has
// none. The caller holds the subscription's change claim.
func (b *EmbeddedBroker) openCursor(ctx context.Context, sub SubscriptionRef, names engineNames, key string) (*subscriptionCursor, error) {
	b.mu.Lock()
	cur, ok := b.cursors[key]
	b.mu.Unlock()
	if ok {
		return cur, nil
	}
	feed, err := b.feedFor(ctx, names)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("topic %s not ensured at the broker: %w", sub.Topic.ID, err)
	}
	if err != nil {
		return nil, err
	}
	start, err := b.startPosition(ctx, sub, names, key, feed)
	if err != nil {
		return nil, err
	}
	cur = newSubscriptionCursor(b, key, sub, names, feed, start)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return nil, ErrClosed
	}
	b.cursors[key] = cur
	return cur, nil
}

// startPosition is where a subscription new to this process starts reading, saved before it returns. A
// JetStream consumer an earlier version kept for the subscription is removed once its position is saved:
// its records delivered and not yet acknowledged come again, as they would on reconnecting, and so may
// records acknowledged above its floor.
func (b *EmbeddedBroker) startPosition(ctx context.Context, sub SubscriptionRef, names engineNames, key string, feed *topicFeed) (uint64, error) {
	durable := consumerName(sub)
	var legacy *jetstream.ConsumerInfo
	cons, err := b.js.Consumer(ctx, names.stream, durable)
	switch {
	case err == nil:
		legacy = cons.CachedInfo()
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, fmt.Errorf("topic %s not ensured at the broker: %w", sub.Topic.ID, err)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return 0, fmt.Errorf("look for the engine consumer of an earlier version: %w", err)
	}
	start, saved := b.savedResume(ctx, sub, key, feed)
	switch {
	case legacy != nil && (!saved || legacy.AckFloor.Stream+1 < start):
		start = legacy.AckFloor.Stream + 1
	case saved:
	case sub.StartTime.IsZero():
		start = 1
	default:
		if start, err = b.seqAtTime(ctx, feed, sub.StartTime); err != nil {
			return 0, fmt.Errorf("find the first record at the start time: %w", err)
		}
	}
	b.positions.set(key, start)
	if err := b.positions.save(); err != nil {
		return 0, err
	}
	if legacy != nil {
		if err := b.js.DeleteConsumer(ctx, names.stream, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return 0, fmt.Errorf("remove the engine consumer of an earlier version: %w", err)
		}
		b.log.Info("embedded broker: subscription moved off its engine consumer", "subscription", sub.ID, "resume_seq", start)
	}
	return start, nil
}

// savedResume is the saved position of the subscription of key, unless the topic's stream does not reach
// it: then the position belongs to another life of the stream (a data directory restored from an older
// backup than the positions file), and resuming there would skip records stored since, so the
// subscription starts over from its start time instead (at least once).
func (b *EmbeddedBroker) savedResume(ctx context.Context, sub SubscriptionRef, key string, feed *topicFeed) (uint64, bool) {
	resume, ok := b.positions.get(key)
	if !ok {
		return 0, false
	}
	if err := feed.refresh(ctx); err != nil {
		return resume, true // reading reports what is wrong with the stream
	}
	if last, _ := feed.state(); resume > last+1 {
		b.log.Warn("embedded broker: saved subscription position lies beyond the topic's records; delivering from the subscription's start",
			"subscription", sub.ID, "resume_seq", resume, "last_seq", last)
		return 0, false
	}
	return resume, true
}

// embeddedConsumer is one attached consumer of a subscription's cursor. Its fields below closedCh are
// guarded by the cursor's lock.
type embeddedConsumer struct {
	cursor      *subscriptionCursor
	ackDeadline time.Duration
	maxUnacked  int
	closedCh    chan struct{}

	closed bool
	// held counts the records handed to this consumer and not back yet.
	held int
	// handouts lists them in hand-out order, so the first to expire comes first; entries for records back
	// already are skipped when reached.
	handouts []handout
}

type handout struct {
	ref    recordRef
	serial uint64
	at     time.Time
}

func (c *embeddedConsumer) popHandout() {
	c.handouts[0] = handout{}
	c.handouts = c.handouts[1:]
	if len(c.handouts) == 0 {
		c.handouts = nil
	}
}

var _ Consumer = (*embeddedConsumer)(nil)

func (c *embeddedConsumer) Receive(ctx context.Context, limit int) ([]Delivery, error) {
	limit = max(limit, 1)
	cur := c.cursor
	for {
		cur.mu.Lock()
		if c.closed {
			cur.mu.Unlock()
			return nil, ErrClosed
		}
		if cur.gone {
			cur.mu.Unlock()
			return nil, ErrSubscriptionGone
		}
		now := time.Now()
		nextExpiry := cur.expireLocked(now)
		free := c.maxUnacked - c.held
		var advanced <-chan struct{}
		if free > 0 {
			if out := cur.handOutLocked(c, min(limit, free), now); len(out) > 0 {
				cur.mu.Unlock()
				return out, nil
			}
			var last uint64
			last, advanced = cur.feed.state()
			if !cur.reading && cur.next <= last {
				if err := c.read(ctx); err != nil {
					return nil, err
				}
				continue
			}
		}
		changed := cur.changed
		cur.mu.Unlock()

		wait := feedPollInterval
		if !nextExpiry.IsZero() {
			wait = min(wait, time.Until(nextExpiry))
		}
		timer := time.NewTimer(wait)
		select {
		case <-changed:
		case <-advanced:
		case <-timer.C:
			if free > 0 {
				if err := cur.feed.poll(ctx); errors.Is(err, errStreamGone) {
					cur.markGone()
				}
			}
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-c.closedCh:
			timer.Stop()
			return nil, ErrClosed
		}
		timer.Stop()
	}
}

// read reads the frames after the cursor's position, without the cursor's lock, which it is called with
// and returns without. Errors other than the end of the subscription and ctx's are retried.
func (c *embeddedConsumer) read(ctx context.Context) error {
	cur := c.cursor
	cur.reading = true
	from, generation := cur.next, cur.generation
	cur.mu.Unlock()
	frames, after, err := cur.feed.read(ctx, from, readAheadFrames, readAheadBytes)
	cur.mu.Lock()
	cur.reading = false
	cur.applyLocked(generation, frames, after)
	// Other consumers waiting for this read take its records, or read on themselves.
	cur.signalLocked()
	cur.mu.Unlock()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errStreamGone):
		cur.markGone()
		return ErrSubscriptionGone
	case ctx.Err() != nil:
		return ctx.Err()
	}
	cur.broker.log.Warn("embedded broker: reading a subscription's records failed; retrying", "subscription", cur.subID, "err", err)
	select {
	case <-time.After(readRetryWait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closedCh:
		return ErrClosed
	}
}

func (c *embeddedConsumer) Ack(_ context.Context, handles ...AckHandle) error {
	cur := c.cursor
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	freed := false
	for _, h := range handles {
		if ref, ok := cur.lookupLocked(h.Token); ok && cur.ackLocked(ref) {
			freed = true
		}
	}
	if freed {
		cur.signalLocked()
	}
	return nil
}

// Nack hands the records this consumer holds back to the subscription at once.
func (c *embeddedConsumer) Nack(_ context.Context, handles ...AckHandle) error {
	cur := c.cursor
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	released := false
	for _, h := range handles {
		if ref, ok := cur.lookupLocked(h.Token); ok && ref.state().holder == c {
			cur.releaseLocked(ref)
			released = true
		}
	}
	if released {
		cur.signalLocked()
	}
	return nil
}

// Close detaches the consumer; the records it holds go back to the subscription at once, in the order it
// was handed them.
func (c *embeddedConsumer) Close() error {
	cur := c.cursor
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.closedCh)
	for _, h := range c.handouts {
		if st := h.ref.state(); !h.ref.frame.dropped && st.holder == c && st.handout == h.serial {
			cur.releaseLocked(h.ref)
		}
	}
	c.handouts = nil
	cur.detachLocked(c)
	cur.signalLocked()
	return nil
}

func ackToken(seq uint64, index int) string {
	return strconv.FormatUint(seq, 10) + "-" + strconv.Itoa(index)
}

func parseAckToken(token string) (seq uint64, index int, ok bool) {
	s, i, found := strings.Cut(token, "-")
	if !found {
		return 0, 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	index, err = strconv.Atoi(i)
	if err != nil || index < 0 {
		return 0, 0, false
	}
	return seq, index, true
}
