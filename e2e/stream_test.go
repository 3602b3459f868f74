package e2e

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
)

// deliveryTimeout bounds the wait for one expected event.
const deliveryTimeout = 30 * time.Second

// subscriber is an open StreamPortfolio call whose events are read in the background.
type subscriber struct {
	t              *testing.T
	subscriptionID string
	events         chan *pdsv1.DeliveredEvent
	// done is closed when the stream ended; err says why.
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	tally  *tally
}

// openStream starts StreamPortfolio for subscriptionID. The stream is closed by disconnect or t.Cleanup.
func openStream(t *testing.T, client pdsv1connect.PortfolioStreamClient, subscriptionID string, tl *tally) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{
		t: t, subscriptionID: subscriptionID, cancel: cancel, tally: tl,
		events: make(chan *pdsv1.DeliveredEvent, 10_000), done: make(chan struct{}),
	}
	stream, err := client.StreamPortfolio(ctx, connect.NewRequest(&pdsv1.StreamRequest{SubscriptionId: subscriptionID}))
	if err != nil {
		cancel()
		t.Fatalf("StreamPortfolio %q: %v", subscriptionID, err)
	}
	go func() {
		defer close(s.done)
		defer stream.Close()
		for stream.Receive() {
			for _, ev := range stream.Msg().GetEvents() {
				s.events <- ev
			}
		}
		s.err = stream.Err()
	}()
	t.Cleanup(s.disconnect)
	return s
}

// disconnect drops the stream the way a crashing subscriber would: without acknowledging anything.
func (s *subscriber) disconnect() {
	s.cancel()
	<-s.done
}

// next returns the next delivered event, failing the test when none arrives within deliveryTimeout or the
// stream ends.
func (s *subscriber) next() *pdsv1.DeliveredEvent {
	s.t.Helper()
	select {
	case ev := <-s.events:
		s.tally.count(ev)
		return ev
	case <-s.done:
		select {
		case ev := <-s.events:
			s.tally.count(ev)
			return ev
		default:
		}
		s.t.Fatalf("stream of %q ended before the expected event arrived: %v", s.subscriptionID, s.err)
	case <-time.After(deliveryTimeout):
		s.t.Fatalf("no event on subscription %q within %v", s.subscriptionID, deliveryTimeout)
	}
	return nil
}

// tally counts what a test published and received, reported when the test ends as
// "published=N delivered=N redelivered=N lost=N". Lost events are the published events the test expected a
// subscription to deliver (expect) that never arrived; any of them fails a test that has not failed already.
type tally struct {
	published, received, redelivered int
	// awaited holds the ids of expected events not delivered yet.
	awaited map[string]bool
}

func newTally(t *testing.T) *tally {
	tl := &tally{awaited: map[string]bool{}}
	t.Cleanup(func() {
		t.Logf("events: published=%d delivered=%d redelivered=%d lost=%d", tl.published, tl.received, tl.redelivered, len(tl.awaited))
		switch {
		case len(tl.awaited) > 0 && t.Failed():
			t.Logf("%d published events were not delivered before the test stopped: %v", len(tl.awaited), slices.Sorted(maps.Keys(tl.awaited)))
		case len(tl.awaited) > 0:
			t.Errorf("%d published events were never delivered: %v", len(tl.awaited), slices.Sorted(maps.Keys(tl.awaited)))
		}
	})
	return tl
}

// expect records events whose Publish returned OK and which a subscription of the test must deliver.
func (tl *tally) expect(events []*pdsv1.PublishedEvent) {
	tl.published += len(events)
	for _, ev := range events {
		tl.awaited[ev.GetEventId()] = true
	}
}

// count records one received event.
func (tl *tally) count(ev *pdsv1.DeliveredEvent) {
	tl.received++
	if ev.GetDeliveryAttempt() > 1 {
		tl.redelivered++
	}
	delete(tl.awaited, ev.GetEvent().GetEventId())
}
