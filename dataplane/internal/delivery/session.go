package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/broker"
)

// errInterrupted cancels a Receive when the session's subscription or topic changed in the config.
var errInterrupted = errors.New("subscription config changed")

// Session is one stream's view of a subscription: one broker consumer, the events it handed out and not
// yet acknowledged, and the flow-control bound on them.
//
// Next is meant for one goroutine (concurrent calls are serialised); Close may be called from any
// goroutine, also while Next is blocked, and more than once.
type Session struct {
	id             string
	svc            *Service
	tenantID       string
	subscriptionID string
	ref            broker.SubscriptionRef
	consumer       broker.Consumer
	maxInFlight    int
	autoAck        bool
	encodedEvents  bool
	metrics        sessionMetrics

	// ctx ends when the session closes.
	ctx    context.Context
	cancel context.CancelFunc

	// nextMu serialises Next: a broker Consumer is received from by one goroutine.
	nextMu sync.Mutex

	// seenSub and seenTopic are what Next last read from the config; the config watcher compares them
	// with newer configs to wake Next when they change.
	seenSub   atomic.Pointer[configfsm.Subscription]
	seenTopic atomic.Pointer[pdsv1.Topic]

	// wake (capacity 1) tells a Next waiting for room that an acknowledgement freed some or that the
	// config changed.
	wake chan struct{}

	// life is held for reading while acknowledging at the broker and for writing while closing, so an
	// acknowledgement never reaches a closed consumer.
	life sync.RWMutex

	mu            sync.Mutex
	closed        bool
	inFlight      map[string]inFlightEvent // by broker handle token
	interrupted   bool
	cancelReceive context.CancelCauseFunc

	closeOnce sync.Once
	closeErr  error
}

type inFlightEvent struct {
	handle broker.AckHandle
	// expires is when the broker delivers the event again; from then on it no longer holds room.
	expires time.Time
}

func newSession(svc *Service, id, tenantID, subscriptionID string, ref broker.SubscriptionRef,
	consumer broker.Consumer, maxInFlight int, opts StreamOptions,
) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	return &Session{
		id:             id,
		svc:            svc,
		tenantID:       tenantID,
		subscriptionID: subscriptionID,
		ref:            ref,
		consumer:       consumer,
		maxInFlight:    maxInFlight,
		autoAck:        opts.AutoAck,
		encodedEvents:  opts.EncodedEvents,
		metrics:        svc.metrics.forSession(tenantID, subscriptionID),
		ctx:            ctx,
		cancel:         cancel,
		wake:           make(chan struct{}, 1),
		inFlight:       make(map[string]inFlightEvent),
	}
}

// ID identifies the session on this node; it prefixes the session's ack ids.
func (s *Session) ID() string { return s.id }

// Next blocks until at least one event for the subscription is ready, then returns every ready one, in
// the order the broker delivered them (so in order per routing key). It never lets the session hold more
// than its max in flight unacknowledged events: at the bound it waits for Acknowledge or for ack
// deadlines to pass.
//
// Events the subscription does not accept (another target workflow, its filters) are acknowledged at
// the broker and skipped. Each call reads the subscription from the newest config, so filter changes
// apply at once; when the subscription is paused, deleted, moved to another topic or given another
// workflow, Next returns ErrSubscriptionPaused, ErrSubscriptionNotFound, ErrTopicNotFound, ErrTopicChanged
// or ErrWorkflowChanged and the stream should end. It returns ctx.Err() when ctx ends and ErrSessionClosed after Close.
func (s *Session) Next(ctx context.Context) ([]*pdsv1.DeliveredEvent, error) {
	s.nextMu.Lock()
	defer s.nextMu.Unlock()
	for {
		if s.ctx.Err() != nil {
			return nil, ErrSessionClosed
		}
		s.mu.Lock()
		s.interrupted = false
		s.mu.Unlock()
		if _, err := s.current(); err != nil {
			return nil, err
		}
		room, retryAt, expired := s.room(time.Now())
		if len(expired) > 0 {
			// The subscriber missed their ack deadline. A consumer holding its full MaxUnacked may not
			// look for redeliveries until handles are released, so release these explicitly.
			s.nack(expired)
		}
		if room == 0 {
			if err := s.waitForRoom(ctx, retryAt); err != nil {
				return nil, err
			}
			continue
		}
		deliveries, err := s.receive(ctx, room)
		if errors.Is(err, errInterrupted) {
			continue
		}
		if err != nil {
			return nil, err
		}
		events, err := s.admit(ctx, deliveries)
		if err != nil || len(events) > 0 {
			return events, err
		}
	}
}

// Close ends the session: a blocked Next returns ErrSessionClosed, its ack ids become unknown, and the
// broker delivers its unacknowledged events again without waiting for their ack deadline.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.svc.removeSession(s)
		s.life.Lock()
		defer s.life.Unlock()
		s.mu.Lock()
		s.closed = true
		released := len(s.inFlight)
		s.inFlight = nil
		s.mu.Unlock()
		s.metrics.inFlightDelta(int64(-released))
		if err := s.consumer.Close(); err != nil {
			s.closeErr = fmt.Errorf("close delivery session of subscription %q: %w", s.subscriptionID, err)
		}
	})
	return s.closeErr
}

// current reads the session's subscription and topic from the newest config and checks that they are
// still the ones the session's broker consumer reads.
func (s *Session) current() (*configfsm.Subscription, error) {
	sub, topic, err := resolve(s.svc.deps.Config(), s.tenantID, s.subscriptionID)
	if err == nil && sub.Proto.GetId() != s.ref.ID {
		err = ErrSubscriptionNotFound // deleted and created again: a different broker subscription
	}
	if err == nil && topic.GetId() != s.ref.Topic.ID {
		err = ErrTopicChanged
	}
	if err == nil && sub.Proto.GetSubscriberWorkflow() != s.ref.Workflow {
		err = ErrWorkflowChanged
	}
	if err != nil {
		return nil, fmt.Errorf("deliver subscription %q: %w", s.subscriptionID, err)
	}
	s.seenSub.Store(sub)
	s.seenTopic.Store(topic)
	return sub, nil
}

// configChanged wakes Next when cfg changes what the session last read.
func (s *Session) configChanged(cfg *configfsm.Config) {
	sub, _ := cfg.Subscription(s.tenantID, s.subscriptionID)
	var topic *pdsv1.Topic
	if sub != nil {
		topic, _ = cfg.Topic(s.tenantID, sub.Proto.GetTopicName())
	}
	if sub == s.seenSub.Load() && topic == s.seenTopic.Load() {
		return
	}
	s.mu.Lock()
	s.interrupted = true
	cancel := s.cancelReceive
	s.mu.Unlock()
	if cancel != nil {
		cancel(errInterrupted)
	}
	s.signal()
}

func (s *Session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// room returns how many more events the session may hand out. At the bound it first lets go of the
// events past their ack deadline, returning their handles so Next can hand them back to the broker for
// redelivery, and reports when the next one expires.
func (s *Session) room(now time.Time) (room int, retryAt time.Time, expired []broker.AckHandle) {
	if s.autoAck {
		return s.maxInFlight, time.Time{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inFlight) < s.maxInFlight {
		return s.maxInFlight - len(s.inFlight), time.Time{}, nil
	}
	// A full scan, but only when the stream is at its bound, so at most once per acknowledgement.
	for token, ev := range s.inFlight {
		if !now.Before(ev.expires) {
			delete(s.inFlight, token)
			expired = append(expired, ev.handle)
			continue
		}
		if retryAt.IsZero() || ev.expires.Before(retryAt) {
			retryAt = ev.expires
		}
	}
	s.metrics.inFlightDelta(int64(-len(expired)))
	return s.maxInFlight - len(s.inFlight), retryAt, expired
}

func (s *Session) waitForRoom(ctx context.Context, retryAt time.Time) error {
	var expiry <-chan time.Time
	if !retryAt.IsZero() {
		timer := time.NewTimer(time.Until(retryAt))
		defer timer.Stop()
		expiry = timer.C
	}
	select {
	case <-s.wake:
		return nil
	case <-expiry:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrSessionClosed
	}
}

// receive waits for up to max deliveries; a config change of the subscription interrupts it with
// errInterrupted so Next can re-read the config.
func (s *Session) receive(ctx context.Context, max int) ([]broker.Delivery, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(s.ctx, func() { cancel(ErrSessionClosed) })
	defer stop()

	s.mu.Lock()
	if s.interrupted {
		s.mu.Unlock()
		return nil, errInterrupted
	}
	s.cancelReceive = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancelReceive = nil
		s.mu.Unlock()
	}()

	deliveries, err := s.consumer.Receive(rctx, max)
	switch {
	case err == nil:
		return deliveries, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case s.ctx.Err() != nil:
		return nil, ErrSessionClosed
	case errors.Is(context.Cause(rctx), errInterrupted):
		return nil, errInterrupted
	default:
		return nil, fmt.Errorf("deliver subscription %q: receive: %w", s.subscriptionID, err)
	}
}

// admit turns deliveries into the events the subscription accepts, records them as in flight (or
// acknowledges them under auto-ack) and acknowledges the rest at the broker.
func (s *Session) admit(ctx context.Context, deliveries []broker.Delivery) ([]*pdsv1.DeliveredEvent, error) {
	sub, err := s.current()
	if err != nil {
		s.nackDeliveries(deliveries)
		return nil, err
	}
	workflow := sub.Proto.GetSubscriberWorkflow()
	summaries, _ := sub.Matcher.(summaryMatcher)
	if sub.CompileErr != nil {
		summaries = nil
	}
	type accepted struct {
		delivery *broker.Delivery
		event    *decodedEvent // nil when encoded is set
		// encoded is the event field of an EncodedEvents stream's DeliveredEvent (see StreamOptions),
		// with the data type and priority read from the stored bytes.
		encoded  []byte
		dataType pdsv1.PortfolioDataType
		priority int32
	}
	var taken []accepted
	var settle []broker.AckHandle // acknowledged at the broker now
	var redelivered int64
	var summary filter.Summary
	sharing := s.svc.topicSharing(s.ref.Topic.ID)
	// Counted per batch: one metric update per event would cost more than skipping the event.
	var skippedWorkflow, skippedFilter, undecodable int64
	for i := range deliveries {
		d := &deliveries[i]
		// Every subscription of a topic reads all of its events; most subscriptions take few of them.
		// Reject from the summary when it decides, so a skipped event is never decoded.
		filterDecided := false
		shared := sharing.mayShare()
		if (summaries != nil || s.encodedEvents) && filter.Summarize(d.Value, &summary) == nil {
			if !summary.TargetsWorkflow(workflow) {
				skippedWorkflow++
				settle = append(settle, d.Handle)
				continue
			}
			match, decided := true, sub.Matcher == nil && sub.CompileErr == nil
			if summaries != nil {
				match, decided = summaries.MatchSummary(&summary)
			}
			if decided && !match {
				skippedFilter++
				settle = append(settle, d.Handle)
				continue
			}
			filterDecided = decided
			shared = sharing.shares(&summary)
			if decided && s.encodedEvents {
				if field, ok := s.svc.decoded.encodedEventField(d.Value, shared); ok {
					taken = append(taken, accepted{delivery: d, encoded: field, dataType: summary.DataType, priority: summary.Priority})
					continue
				}
			}
		}
		dec, err := s.svc.decoded.decode(d.Value, shared)
		if err != nil {
			// Redelivering a record no node can decode would loop forever.
			s.svc.deps.Logger.Error("dropping undecodable record", "tenant_id", s.tenantID,
				"subscription_id", s.subscriptionID, "event_id", d.EventID, "partition", d.Partition, "err", err)
			undecodable++
			settle = append(settle, d.Handle)
			continue
		}
		ev := dec.event
		if !filterDecided {
			if !routing.TargetsWorkflow(ev, workflow) {
				skippedWorkflow++
				settle = append(settle, d.Handle)
				continue
			}
			if !matches(sub, ev) {
				skippedFilter++
				settle = append(settle, d.Handle)
				continue
			}
		}
		taken = append(taken, accepted{delivery: d, event: dec})
	}
	s.metrics.filtered(reasonWorkflow, skippedWorkflow)
	s.metrics.filtered(reasonFilter, skippedFilter)
	s.metrics.filtered(reasonUndecodable, undecodable)

	// One allocation per batch instead of one per event: the messages are handed out together and never
	// copied, so the slab lives exactly as long as the batch.
	delivered := make([]pdsv1.DeliveredEvent, len(taken))
	events := make([]*pdsv1.DeliveredEvent, len(taken))
	kept := make([]broker.AckHandle, len(taken))
	for i, t := range taken {
		if t.delivery.Attempt > 1 {
			redelivered++
		}
		out := &delivered[i]
		if t.event != nil {
			out.Event = t.event.distributed
			out.DataType = t.event.event.GetDataType()
			out.Priority = t.event.event.GetRouting().GetPriority()
		} else {
			out.ProtoReflect().SetUnknown(t.encoded)
			out.DataType = t.dataType
			out.Priority = t.priority
		}
		out.DeliveryAttempt = int32(max(t.delivery.Attempt, 1))
		events[i] = out
		kept[i] = t.delivery.Handle
	}

	if s.autoAck {
		settle = append(settle, kept...)
	} else if len(kept) > 0 {
		expires := time.Now().Add(s.svc.ackDeadline)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			// The consumer is closed: the broker delivers these again elsewhere.
			return nil, ErrSessionClosed
		}
		added := 0
		ackIDs := s.ackIDs(kept)
		for i, h := range kept {
			events[i].AckId = ackIDs[i]
			if _, again := s.inFlight[h.Token]; !again {
				added++
			}
			s.inFlight[h.Token] = inFlightEvent{handle: h, expires: expires}
		}
		s.mu.Unlock()
		s.metrics.inFlightDelta(int64(added))
	}
	if len(settle) > 0 {
		// Settle even when the caller is gone: these records are decided and must not come back.
		if err := s.consumer.Ack(context.WithoutCancel(ctx), settle...); err != nil {
			// Not fatal: the broker delivers these again and they are settled then.
			s.svc.deps.Logger.Warn("acknowledging settled records failed", "tenant_id", s.tenantID,
				"subscription_id", s.subscriptionID, "records", len(settle), "err", err)
		} else if s.autoAck {
			s.metrics.acked(int64(len(kept)))
		}
	}
	s.metrics.delivered(int64(len(events)))
	s.metrics.redelivered(redelivered)
	return events, nil
}

// ackIDs returns "<session id>.<handle token>" for each handle. They are cut from one string, so a batch
// costs one allocation instead of one per event.
func (s *Session) ackIDs(handles []broker.AckHandle) []string {
	size := 0
	for _, h := range handles {
		size += len(s.id) + 1 + len(h.Token)
	}
	var all strings.Builder
	all.Grow(size)
	for _, h := range handles {
		all.WriteString(s.id)
		all.WriteByte('.')
		all.WriteString(h.Token)
	}
	joined := all.String()
	ids := make([]string, len(handles))
	start := 0
	for i, h := range handles {
		end := start + len(s.id) + 1 + len(h.Token)
		ids[i] = joined[start:end]
		start = end
	}
	return ids
}

// nack hands records straight back to the broker for redelivery.
func (s *Session) nack(handles []broker.AckHandle) {
	if err := s.consumer.Nack(context.Background(), handles...); err != nil && s.ctx.Err() == nil {
		s.svc.deps.Logger.Warn("returning records to the broker failed; they come back after the ack deadline",
			"tenant_id", s.tenantID, "subscription_id", s.subscriptionID, "records", len(handles), "err", err)
	}
}

// nackDeliveries hands deliveries the session will not deliver straight back to the broker.
func (s *Session) nackDeliveries(deliveries []broker.Delivery) {
	if len(deliveries) == 0 {
		return
	}
	handles := make([]broker.AckHandle, len(deliveries))
	for i := range deliveries {
		handles[i] = deliveries[i].Handle
	}
	s.nack(handles)
}

// acknowledge acknowledges the in-flight events with the given handle tokens and returns the indexes of
// the tokens it does not hold.
func (s *Session) acknowledge(ctx context.Context, tokens []string) (missing []int, err error) {
	s.life.RLock()
	defer s.life.RUnlock()
	handles := make([]broker.AckHandle, 0, len(tokens))
	s.mu.Lock()
	for i, token := range tokens {
		ev, ok := s.inFlight[token]
		if !ok {
			missing = append(missing, i)
			continue
		}
		delete(s.inFlight, token)
		handles = append(handles, ev.handle)
	}
	s.mu.Unlock()
	if len(handles) == 0 {
		return missing, nil
	}
	s.metrics.inFlightDelta(int64(-len(handles)))
	s.signal()
	if err := s.consumer.Ack(ctx, handles...); err != nil {
		return missing, fmt.Errorf("session %s: ack %d events: %w", s.id, len(handles), err)
	}
	s.metrics.acked(int64(len(handles)))
	return missing, nil
}

// summaryMatcher is a Matcher that can also decide from a filter.Summary (a *filter.Filter).
type summaryMatcher interface {
	MatchSummary(s *filter.Summary) (match, decided bool)
}

func matches(sub *configfsm.Subscription, ev *pdsv1.PortfolioDistribution) bool {
	if sub.CompileErr != nil {
		return false
	}
	return sub.Matcher == nil || sub.Matcher.Match(ev)
}
