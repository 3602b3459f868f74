package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Seeks that race with receiving consumers and with consumers subscribing and leaving never make an
// attached consumer fail, and leave the subscription where the last seek put it.
func TestEmbeddedSeeksRacingWithConsumersKeepThemWorking(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test with the embedded engine; skipped with -short")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	topic := newTopic(t, b, 2)
	records := makeRecords("storm", 200, 2)
	publish(t, b, topic, records)
	sub := newSubscription(topic)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stop := make(chan struct{})
	errs := make(chan error, 16)
	var receivers sync.WaitGroup
	for range 2 {
		c := subscribe(t, b, sub, ConsumerOptions{AckDeadline: 5 * time.Second, MaxUnacked: 50})
		receivers.Go(func() {
			rctx, rcancel := context.WithCancel(ctx)
			defer rcancel()
			go func() {
				select {
				case <-stop:
					rcancel()
				case <-rctx.Done():
				}
			}()
			for {
				batch, err := c.Receive(rctx, 20)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						errs <- err
					}
					return
				}
				if err := c.Ack(rctx, handles(batch)...); err != nil && !errors.Is(err, context.Canceled) {
					errs <- err
					return
				}
			}
		})
	}

	var seekers sync.WaitGroup
	for i := range 3 {
		seekers.Go(func() {
			for j := range 5 {
				pos := SeekPosition{Earliest: true}
				if (i+j)%3 == 1 {
					pos = SeekPosition{Latest: true}
				}
				if err := b.Seek(ctx, sub, pos); err != nil {
					errs <- err
					return
				}
				// A consumer that comes and goes while others seek.
				c, err := b.Subscribe(ctx, sub, ConsumerOptions{})
				if err != nil {
					errs <- err
					return
				}
				if err := c.Close(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	seekers.Wait()
	close(stop)
	receivers.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("during racing seeks: %v", err)
	}
	if t.Failed() {
		return
	}

	seekTo(t, b, sub, SeekPosition{Earliest: true})
	c := subscribe(t, b, sub, ConsumerOptions{})
	assertSameIDs(t, "records after the last seek to the earliest", eventIDs(receiveN(t, c, len(records), true)), sortedIDs(records))
	expectNoDelivery(t, c, 500*time.Millisecond)
}
