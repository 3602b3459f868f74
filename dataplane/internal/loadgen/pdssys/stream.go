package pdssys

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Reconnect backoff of a stream that ended while the run still needs it.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 2 * time.Second
	// ackTimeout bounds one Acknowledge call.
	ackTimeout = 10 * time.Second
	// maxAckIDsPerCall is the data plane's limit of ack ids per Acknowledge.
	maxAckIDsPerCall = 10000
)

// subscriberStream is one StreamPortfolio stream: it reports each event it receives, spends the
// subscription's processing delay on it, then hands its ack id to the acker. When the stream ends while
// still needed it reconnects, as a real subscriber does; the events it had not acknowledged come again.
type subscriberStream struct {
	client         pdsv1connect.PortfolioStreamClient
	subscriptionID string
	subscription   int
	index          int
	maxInFlight    int32
	delay          time.Duration
	deliver        func(loadgen.Delivery)
	acks           *acker
	logger         *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// open attaches the stream; ctx bounds only the attaching, the stream lives until Close.
func (st *subscriberStream) open(ctx context.Context) error {
	streamCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	rs, err := st.attach(streamCtx)
	if !stop() {
		cancel()
		if rs != nil {
			_ = rs.Close()
		}
		return fmt.Errorf("open stream of subscription %q: %w", st.subscriptionID, ctx.Err())
	}
	if err != nil {
		cancel()
		return err
	}
	st.cancel = cancel
	go st.run(streamCtx, rs)
	return nil
}

// attach starts StreamPortfolio and waits for the response headers, which the data plane sends once the
// delivery session is open. A refusal (e.g. an unknown subscription) arrives as headers followed at once by
// an error status, which only reading the stream reveals: run then logs it and tries again, and the
// deliveries the stream misses show as loss.
func (st *subscriberStream) attach(ctx context.Context) (*connect.ServerStreamForClient[pdsv1.PortfolioMessage], error) {
	rs, err := st.client.StreamPortfolio(ctx, connect.NewRequest(&pdsv1.StreamRequest{
		SubscriptionId: st.subscriptionID,
		MaxInFlight:    st.maxInFlight,
	}))
	if err != nil {
		return nil, fmt.Errorf("open stream of subscription %q: %w", st.subscriptionID, err)
	}
	if rs.ResponseHeader().Get("Content-Type") == "" {
		// No response at all (the call failed before the server answered): Receive returns its error at once.
		rs.Receive()
		err := rs.Err()
		_ = rs.Close()
		return nil, fmt.Errorf("open stream of subscription %q: %w", st.subscriptionID, err)
	}
	return rs, nil
}

func (st *subscriberStream) run(ctx context.Context, rs *connect.ServerStreamForClient[pdsv1.PortfolioMessage]) {
	defer close(st.done)
	backoff := reconnectMin
	for {
		if st.receive(ctx, rs) {
			backoff = reconnectMin
		}
		err := rs.Err()
		_ = rs.Close()
		if ctx.Err() != nil {
			return
		}
		st.logger.Warn("stream ended; reconnecting", "subscription_id", st.subscriptionID, "stream", st.index, "error", err)
		for {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, reconnectMax)
			if rs, err = st.attach(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			st.logger.Warn("reconnect failed", "subscription_id", st.subscriptionID, "stream", st.index, "error", err)
		}
	}
}

// receive handles the stream's messages until it ends and reports whether any came.
func (st *subscriberStream) receive(ctx context.Context, rs *connect.ServerStreamForClient[pdsv1.PortfolioMessage]) (received bool) {
	for rs.Receive() {
		received = true
		now := time.Now()
		for _, ev := range rs.Msg().GetEvents() {
			// An event the load tool did not make (none should come) is acknowledged and not reported.
			if seq, err := loadgen.SeqFromEventID(ev.GetEvent().GetEventId()); err == nil {
				st.deliver(loadgen.Delivery{Subscription: st.subscription, Stream: st.index, Seq: seq, ReceivedAt: now})
			}
			if st.delay > 0 && !sleep(ctx, st.delay) {
				return received
			}
			st.acks.add(ev.GetAckId())
		}
	}
	return received
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close sends the acknowledgements still pending, then ends the stream (while it is open, so the data plane
// still knows their ack ids).
func (st *subscriberStream) Close() error {
	err := st.acks.close()
	st.cancel()
	<-st.done
	return err
}

// acker batches a stream's acknowledgements: it sends them when AckBatch are pending or AckInterval after the
// first of them, one Acknowledge call at a time. Its timer runs only while acknowledgements wait, so idle
// streams cost nothing.
type acker struct {
	client         pdsv1connect.PortfolioStreamClient
	subscriptionID string
	batch          int
	interval       time.Duration
	logger         *slog.Logger

	mu      sync.Mutex
	pending []string

	first, full chan struct{}
	stop, done  chan struct{}
	failed      atomic.Int64
	unknown     atomic.Int64
	closeOnce   sync.Once
}

func newAcker(client pdsv1connect.PortfolioStreamClient, subscriptionID string, batch int, interval time.Duration, logger *slog.Logger) *acker {
	a := &acker{
		client: client, subscriptionID: subscriptionID, batch: batch, interval: interval, logger: logger,
		pending: make([]string, 0, batch),
		first:   make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go a.loop()
	return a
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (a *acker) add(ackID string) {
	if ackID == "" {
		return
	}
	a.mu.Lock()
	a.pending = append(a.pending, ackID)
	n := len(a.pending)
	a.mu.Unlock()
	if n == 1 {
		signal(a.first)
	}
	if n >= a.batch {
		signal(a.full)
	}
}

func (a *acker) loop() {
	defer close(a.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		select {
		case <-a.stop:
			timer.Stop()
			a.flush()
			return
		case <-a.first:
			if !armed {
				timer.Reset(a.interval)
				armed = true
			}
		case <-a.full:
			a.flush()
		case <-timer.C:
			armed = false
			a.flush()
		}
	}
}

func (a *acker) flush() {
	a.mu.Lock()
	ids := a.pending
	if len(ids) == 0 {
		a.mu.Unlock()
		return
	}
	a.pending = make([]string, 0, a.batch)
	a.mu.Unlock()
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxAckIDsPerCall)]
		ids = ids[len(chunk):]
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		resp, err := a.client.Acknowledge(ctx, connect.NewRequest(&pdsv1.AcknowledgeRequest{
			SubscriptionId: a.subscriptionID, AckIds: chunk,
		}))
		cancel()
		if err != nil {
			// The events come again after the ack deadline: the report shows them as duplicates.
			if a.failed.Add(int64(len(chunk))) == int64(len(chunk)) {
				a.logger.Warn("acknowledge failed", "subscription_id", a.subscriptionID, "ack_ids", len(chunk), "error", err)
			}
			continue
		}
		a.unknown.Add(int64(len(resp.Msg.GetUnknownAckIds())))
	}
}

// close sends what is pending and stops; it reports acknowledgements that failed or that the data plane did
// not know.
func (a *acker) close() error {
	a.closeOnce.Do(func() { close(a.stop) })
	<-a.done
	if failed, unknown := a.failed.Load(), a.unknown.Load(); failed > 0 || unknown > 0 {
		return fmt.Errorf("subscription %q: %d acknowledgements failed and %d ack ids were unknown to the data plane", a.subscriptionID, failed, unknown)
	}
	return nil
}
