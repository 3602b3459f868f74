package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var _ Seeker = (*EmbeddedBroker)(nil)

// Seek moves the subscription's durable JetStream consumer to pos.
//
// A JetStream consumer cannot change its deliver policy, and the engine's in-place reset (CONSUMER.RESET)
// cannot move a consumer created with a start time (every PDS subscription's) below that time, so Seek
// deletes the durable consumer and creates it again at pos, keeping its ack deadline and pending bound:
// Earliest delivers everything the stream stores, Latest only what is published after the seek, Time what
// was stored at or after it. The engine delivers no record twice within one consumer's life, so every
// record from pos on is delivered again, acknowledged or not. The new position is saved before Seek returns
// (broker_embedded_positions.go), so a crash right after it does not undo it.
//
// Consumers of the subscription attached in this process keep working: while the seek runs they do not
// pull, they drop what they received from the old consumer (its handles become unknown), and they pull
// from the new consumer on fresh inboxes, so nothing the old consumer still sends reaches them. The
// embedded engine has no listener, so no other process can hold a consumer of it. Seeks and Subscribes
// of one subscription run one after the other. If Seek fails after deleting the engine consumer, attached
// consumers report ErrSubscriptionGone and the next Subscribe creates the subscription from its StartTime.
func (b *EmbeddedBroker) Seek(ctx context.Context, sub SubscriptionRef, pos SeekPosition) error {
	if b.isClosed() {
		return ErrClosed
	}
	if err := pos.validate(); err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	names := topicNames(sub.Topic)
	durable := consumerName(sub)
	key := names.stream + "/" + durable

	done, err := b.beginConsumerChange(ctx, key)
	if err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	defer b.endConsumerChange(key, done)
	b.mu.Lock()
	var attached []*embeddedConsumer
	for c := range b.consumers {
		if c.key == key {
			attached = append(attached, c)
		}
	}
	b.mu.Unlock()
	for _, c := range attached {
		c.beginSeek(done)
	}

	cfg, err := b.seekConsumerConfig(ctx, sub, names, durable, pos)
	if err != nil {
		return err
	}
	if err := b.js.DeleteConsumer(ctx, names.stream, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("seek subscription %s: delete consumer: %w", sub.ID, err)
	}
	if err := b.createConsumerAfterDelete(ctx, names.stream, cfg); err != nil {
		return fmt.Errorf("seek subscription %s: create consumer at the new position: %w", sub.ID, err)
	}
	// Partial acknowledgements name stream sequences the new consumer delivers afresh.
	b.ackRegistry(key).reset()
	if err := b.recordPosition(ctx, key); err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	return nil
}

// createConsumerAfterDelete creates a consumer whose namesake was just deleted. The engine removes the old
// consumer's files after it answers the delete, so the new consumer's first state write can fail (an
// internal error, "rename …/o.dat.tmp: no such file or directory"); a retry finds the directory settled.
func (b *EmbeddedBroker) createConsumerAfterDelete(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) error {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		_, err := b.js.CreateConsumer(ctx, stream, cfg)
		var apiErr *jetstream.APIError
		if err == nil || attempt == attempts || !errors.As(err, &apiErr) || apiErr.Code != 500 {
			return err
		}
		select {
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-b.closed:
			return ErrClosed
		}
	}
}

// beginConsumerChange waits until no other Seek or Subscribe changes the engine consumer of the
// subscription with the given registry key, then claims it; endConsumerChange releases it. The returned
// channel is closed on release.
func (b *EmbeddedBroker) beginConsumerChange(ctx context.Context, key string) (chan struct{}, error) {
	done := make(chan struct{})
	for {
		b.mu.Lock()
		running, busy := b.changing[key]
		if !busy {
			b.changing[key] = done
			b.mu.Unlock()
			return done, nil
		}
		b.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.closed:
			return nil, ErrClosed
		}
	}
}

// tryBeginConsumerChange claims the consumer of key like beginConsumerChange, unless a change is running.
func (b *EmbeddedBroker) tryBeginConsumerChange(key string) (chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, busy := b.changing[key]; busy {
		return nil, false
	}
	done := make(chan struct{})
	b.changing[key] = done
	return done, true
}

func (b *EmbeddedBroker) endConsumerChange(key string, done chan struct{}) {
	b.mu.Lock()
	delete(b.changing, key)
	b.mu.Unlock()
	close(done)
}

// seekConsumerConfig is the configuration of the subscription's consumer at pos: its current ack deadline
// and pending bound, or the defaults when the subscription does not exist at the broker yet, and the
// filter of sub.Workflow.
func (b *EmbeddedBroker) seekConsumerConfig(ctx context.Context, sub SubscriptionRef, names engineNames, durable string, pos SeekPosition) (jetstream.ConsumerConfig, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "PDS subscription " + sub.ID,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        defaultAckDeadline,
		MaxAckPending:  max(2*defaultMaxUnacked, 256),
		MaxDeliver:     -1,
		FilterSubjects: names.consumerFilter(sub.Workflow),
		MemoryStorage:  true,
	}
	cons, err := b.js.Consumer(ctx, names.stream, durable)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return cfg, fmt.Errorf("seek subscription %s: topic %s not ensured at the broker: %w", sub.ID, sub.Topic.ID, err)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return cfg, fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	default:
		current := cons.CachedInfo().Config
		cfg.AckWait, cfg.MaxAckPending = current.AckWait, current.MaxAckPending
	}
	switch {
	case pos.Earliest:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case pos.Latest:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	default:
		start := pos.Time.UTC()
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	return cfg, nil
}

// beginSeek makes the consumer forget everything the old engine consumer gave it and wait for done
// before it pulls again, from a fresh inbox.
func (c *embeddedConsumer) beginSeek(done chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	inbox := c.broker.subConn.NewInbox()
	sub, err := c.broker.subConn.ChanSubscribe(inbox+".*", c.incoming)
	if err != nil {
		// The connection is closing with the broker; Receive reports ErrClosed soon.
		c.broker.log.Warn("embedded broker: new inbox for a seek", "err", err)
	} else {
		old := c.natsSub
		c.natsSub, c.inbox = sub, inbox
		_ = old.Unsubscribe()
	}
	c.request = pullRequest{seq: c.request.seq + 1}
	for _, fb := range c.batches {
		fb.released = true
	}
	clear(c.batches)
	c.buffer = nil
	clear(c.outstanding)
	c.seekDone = done
	select {
	case c.seeked <- struct{}{}:
	default:
	}
	c.signalCapacity()
}

// reset forgets every partial acknowledgement.
func (r *ackRegistry) reset() {
	r.mu.Lock()
	clear(r.batches)
	r.mu.Unlock()
}
