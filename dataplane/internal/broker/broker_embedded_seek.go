package broker

import (
	"context"
	"fmt"
)

var _ Seeker = (*EmbeddedBroker)(nil)

// Seek moves the subscription's cursor to pos: Earliest delivers everything the stream stores, Latest only
// what is published after the seek, Time what was stored at or after it. Every record from pos on is
// delivered again, acknowledged or not. The new position is saved before Seek returns
// (broker_embedded_positions.go), so a crash right after it does not undo it. A subscription the broker
// does not know yet is created at pos.
//
// Consumers of the subscription attached in this process keep working: what they hold becomes unknown
// (their acks are ignored) and they receive from pos on. The embedded engine has no listener, so no other
// process can hold a consumer of it. Seeks and Subscribes of one subscription run one after the other.
func (b *EmbeddedBroker) Seek(ctx context.Context, sub SubscriptionRef, pos SeekPosition) error {
	if b.isClosed() {
		return ErrClosed
	}
	if err := pos.validate(); err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	names := topicNames(sub.Topic)
	key := names.stream + "/" + consumerName(sub)
	done, err := b.beginCursorChange(ctx, key)
	if err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	defer b.endCursorChange(key, done)
	cur, err := b.openCursor(ctx, sub, names, key)
	if err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	var seq uint64
	switch {
	case pos.Earliest:
		seq = 1
	case pos.Latest:
		if err := cur.feed.refresh(ctx); err != nil {
			return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
		}
		last, _ := cur.feed.state()
		seq = last + 1
	default:
		if seq, err = b.seqAtTime(ctx, cur.feed, pos.Time); err != nil {
			return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
		}
	}
	cur.mu.Lock()
	if cur.gone {
		cur.mu.Unlock()
		return fmt.Errorf("seek subscription %s: %w", sub.ID, ErrSubscriptionGone)
	}
	cur.resetLocked(seq)
	// Noted under the cursor's lock, as checkpoints note positions, so a checkpoint cannot note the
	// position from before the seek after this.
	b.positions.set(key, seq)
	cur.mu.Unlock()
	if err := b.positions.save(); err != nil {
		return fmt.Errorf("seek subscription %s: %w", sub.ID, err)
	}
	return nil
}

// beginCursorChange waits until no other Seek or Subscribe works on the subscription with the given
// registry key, then claims it; endCursorChange releases it. The returned channel is closed on release.
func (b *EmbeddedBroker) beginCursorChange(ctx context.Context, key string) (chan struct{}, error) {
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

func (b *EmbeddedBroker) endCursorChange(key string, done chan struct{}) {
	b.mu.Lock()
	delete(b.changing, key)
	b.mu.Unlock()
	close(done)
}
