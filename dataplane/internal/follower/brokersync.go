package follower

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
)

// BrokerSyncDeps are BrokerSync's collaborators; none may be nil.
type BrokerSyncDeps struct {
	// FSM is the node's replicated configuration, the source of truth for topics and subscriptions.
	FSM *configfsm.FSM
	// Broker is where the configuration is carried out.
	Broker broker.Broker
	// Reporter tells the control plane each topic's outcome (Topic.broker_status).
	Reporter TopicStatusReporter
	Logger   *slog.Logger
}

// BrokerSyncOptions tune BrokerSync. Every zero value means its default.
type BrokerSyncOptions struct {
	// RetryMin is the pause after the first failed attempt of a topic (or of a report); each further
	// failure doubles it up to RetryMax, with ±20% jitter so nodes do not retry in step. Zero means 500ms.
	RetryMin time.Duration
	// RetryMax caps the pause between attempts. Zero means 30s.
	RetryMax time.Duration
	// AttemptTimeout bounds one broker call. Zero means 30s.
	AttemptTimeout time.Duration
	// ReportTimeout bounds one report to the control plane. Zero means 10s.
	ReportTimeout time.Duration
	// Resync is how often every topic is ensured and reported again although nothing changed: it repairs a
	// topic removed at the broker behind PDS's back, and refreshes the control plane's view after it lost
	// the reports (e.g. the node was removed from the cluster and rejoined). Zero means 5 minutes.
	Resync time.Duration
}

func (o BrokerSyncOptions) withDefaults() BrokerSyncOptions {
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 30 * time.Second
	}
	if o.ReportTimeout <= 0 {
		o.ReportTimeout = 10 * time.Second
	}
	if o.Resync <= 0 {
		o.Resync = 5 * time.Minute
	}
	return o
}

// BrokerSync carries the replicated configuration out at the broker: every topic of the config exists
// with its partitions (EnsureTopic creates it or grows it), and the topics and durable subscriptions
// removed from the config are deleted. Every step is idempotent, so any number of data-plane nodes run
// it side by side against one broker.
//
// A failed step is retried with capped exponential backoff until it succeeds or the config changes what
// it has to do (then the new target is tried at once). Each topic's outcome, READY with its partitions or
// FAILED with the error, is reported to the control plane in batches, without ever blocking the sync: a
// report that cannot be delivered is kept (newest per topic) and sent again later, so the node keeps
// working while the control plane is away.
//
// Disabling a topic changes nothing at the broker: the data plane already refuses publishes to a
// disabled topic, and the topic with its stored events and subscriptions stays so that subscribers
// still receive what was published before and enabling it again loses nothing.
//
// A topic or subscription deleted while this node was not running is not deleted at the broker by it:
// a node learns about deletions only from config changes it sees. Another node that was running does it.
type BrokerSync struct {
	deps BrokerSyncDeps
	opts BrokerSyncOptions
	log  *slog.Logger

	// The fields below belong to Run's goroutine.

	// seen is the config whose changes were last taken into account; nil before the first one.
	seen *configfsm.Config
	// ensured holds, per topic id, the partitions this node has ensured at the broker.
	ensured map[string]int
	// deleteTopics and deleteSubs are removals still to carry out, by topic or subscription id.
	deleteTopics map[string]broker.TopicRef
	deleteSubs   map[string]broker.SubscriptionRef
	// retries holds the backoff of failed steps, by stepKey.
	retries map[stepKey]*retry
	// nextResync is when every topic is ensured again.
	nextResync time.Time

	reports *reportQueue
}

type stepKind int

const (
	stepEnsureTopic stepKind = iota
	stepDeleteTopic
	stepDeleteSubscription
)

// stepKey names one step: the kind and the topic or subscription id.
type stepKey struct {
	kind stepKind
	id   string
}

// retry is the backoff state of a failed step.
type retry struct {
	failures int
	next     time.Time
	// partitions is the target of a failed EnsureTopic; a config asking for another count retries at once.
	partitions int
}

// NewBrokerSync checks deps and returns a BrokerSync; call Run to start it.
func NewBrokerSync(deps BrokerSyncDeps, opts BrokerSyncOptions) (*BrokerSync, error) {
	switch {
	case deps.FSM == nil:
		return nil, errors.New("new broker sync: Deps.FSM is nil")
	case deps.Broker == nil:
		return nil, errors.New("new broker sync: Deps.Broker is nil")
	case deps.Reporter == nil:
		return nil, errors.New("new broker sync: Deps.Reporter is nil")
	case deps.Logger == nil:
		return nil, errors.New("new broker sync: Deps.Logger is nil")
	}
	opts = opts.withDefaults()
	return &BrokerSync{
		deps:         deps,
		opts:         opts,
		log:          deps.Logger,
		ensured:      map[string]int{},
		deleteTopics: map[string]broker.TopicRef{},
		deleteSubs:   map[string]broker.SubscriptionRef{},
		retries:      map[stepKey]*retry{},
		reports:      newReportQueue(),
	}, nil
}

// Run syncs until ctx ends. It is called once.
func (s *BrokerSync) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.runReporter(ctx) })
	defer wg.Wait()

	s.nextResync = time.Now().Add(s.opts.Resync)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		changed := s.deps.FSM.Changed()
		current := s.deps.FSM.Current()
		if current != s.seen {
			s.observe(current)
		}
		if !time.Now().Before(s.nextResync) {
			clear(s.ensured)
			s.nextResync = time.Now().Add(s.opts.Resync)
		}
		s.carryOut(ctx, current)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(time.Until(s.nextWake()))
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C:
		}
	}
}

// observe takes the differences between the config seen before and next into account. The first config
// deletes nothing: what this node never saw, it cannot tell apart from what the broker should keep.
func (s *BrokerSync) observe(next *configfsm.Config) {
	prev := s.seen
	s.seen = next
	for _, t := range next.Topics() {
		// A changed target is tried at once rather than after the backoff of the old one.
		if r := s.retries[stepKey{stepEnsureTopic, t.GetId()}]; r != nil && r.partitions != topicRef(t).Partitions {
			delete(s.retries, stepKey{stepEnsureTopic, t.GetId()})
		}
	}
	if prev == nil {
		return
	}
	for _, t := range prev.Topics() {
		if still, ok := next.Topic(t.GetTenantId(), t.GetTopicName()); ok && still.GetId() == t.GetId() {
			continue
		}
		s.deleteTopics[t.GetId()] = topicRef(t)
		delete(s.ensured, t.GetId())
		delete(s.retries, stepKey{stepEnsureTopic, t.GetId()})
		s.reports.drop(t.GetId()) // the control plane ignores reports for deleted topics anyway
	}
	for _, sub := range prev.Subscriptions() {
		p := sub.Proto
		if still, ok := next.Subscription(p.GetTenantId(), p.GetSubscriptionId()); ok && still.Proto.GetId() == p.GetId() {
			continue
		}
		topic, ok := prev.Topic(p.GetTenantId(), p.GetTopicName())
		if !ok {
			continue // its topic was already gone, and with it the subscription
		}
		if _, topicGoes := s.deleteTopics[topic.GetId()]; topicGoes {
			continue // deleting the topic removes its subscriptions
		}
		s.deleteSubs[p.GetId()] = broker.SubscriptionRef{TenantID: p.GetTenantId(), ID: p.GetId(), Topic: topicRef(topic)}
	}
}

// carryOut performs every step that is due: removals first, so they release broker resources (and count
// against namespace quotas no longer) before new topics are created, then the topics of current.
func (s *BrokerSync) carryOut(ctx context.Context, current *configfsm.Config) {
	for id, ref := range s.deleteSubs {
		if s.attempt(ctx, stepKey{stepDeleteSubscription, id}, 0, func(ctx context.Context) error {
			return s.deps.Broker.DeleteSubscription(ctx, ref)
		}) == nil {
			delete(s.deleteSubs, id)
		}
	}
	for id, ref := range s.deleteTopics {
		if s.attempt(ctx, stepKey{stepDeleteTopic, id}, 0, func(ctx context.Context) error {
			return s.deps.Broker.DeleteTopic(ctx, ref)
		}) == nil {
			delete(s.deleteTopics, id)
		}
	}
	// Disabled topics are ensured too: disabling changes nothing at the broker (see BrokerSync).
	for _, t := range current.Topics() {
		ref := topicRef(t)
		if s.ensured[ref.ID] >= ref.Partitions {
			continue
		}
		err := s.attempt(ctx, stepKey{stepEnsureTopic, ref.ID}, ref.Partitions, func(ctx context.Context) error {
			return s.deps.Broker.EnsureTopic(ctx, ref)
		})
		switch {
		case errors.Is(err, errNotDue), ctx.Err() != nil:
		case err == nil:
			s.ensured[ref.ID] = ref.Partitions
			s.reports.put(report(t, pdsv1.BrokerState_BROKER_STATE_READY, "", ref.Partitions))
		default:
			r := s.retries[stepKey{stepEnsureTopic, ref.ID}]
			msg := fmt.Sprintf("%v (failed %d times; next attempt in %s)", err, r.failures, time.Until(r.next).Round(time.Millisecond))
			s.reports.put(report(t, pdsv1.BrokerState_BROKER_STATE_FAILED, msg, 0))
		}
	}
}

// errNotDue: the step waits for its backoff to end.
var errNotDue = errors.New("not due")

// attempt runs step unless it is waiting for its backoff, and keeps the backoff state: cleared on
// success, lengthened on failure. A failure because ctx ended is not counted.
func (s *BrokerSync) attempt(ctx context.Context, key stepKey, partitions int, step func(context.Context) error) error {
	r := s.retries[key]
	if r != nil && time.Now().Before(r.next) {
		return errNotDue
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	callCtx, cancel := context.WithTimeout(ctx, s.opts.AttemptTimeout)
	err := step(callCtx)
	cancel()
	if err == nil {
		delete(s.retries, key)
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if r == nil {
		r = &retry{}
		s.retries[key] = r
	}
	r.failures++
	r.partitions = partitions
	r.next = time.Now().Add(backoff(s.opts.RetryMin, s.opts.RetryMax, r.failures))
	s.log.Warn("carrying out the configuration at the broker failed; retrying",
		"step", key.kind.String(), "id", key.id, "failures", r.failures, "next_attempt", r.next, "error", err)
	return err
}

func (k stepKind) String() string {
	switch k {
	case stepEnsureTopic:
		return "ensure topic"
	case stepDeleteTopic:
		return "delete topic"
	case stepDeleteSubscription:
		return "delete subscription"
	}
	return fmt.Sprintf("step %d", int(k))
}

// nextWake is when the next step comes due: the earliest retry, or the next resync. Every retry entry is
// outstanding work: entries go when their step succeeds or is no longer wanted.
func (s *BrokerSync) nextWake() time.Time {
	wake := s.nextResync
	for _, r := range s.retries {
		if r.next.Before(wake) {
			wake = r.next
		}
	}
	return wake
}

// backoff is the pause after the given number of consecutive failures: min doubled per failure after the
// first, capped at max, with ±20% jitter.
func backoff(minPause, maxPause time.Duration, failures int) time.Duration {
	d := minPause
	for i := 1; i < failures && d < maxPause; i++ {
		d *= 2
	}
	d = min(d, maxPause)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func topicRef(t *pdsv1.Topic) broker.TopicRef {
	return broker.TopicRef{
		TenantID:   t.GetTenantId(),
		ID:         t.GetId(),
		Name:       t.GetTopicName(),
		Partitions: max(int(t.GetPartitions()), 1),
	}
}

func report(t *pdsv1.Topic, state pdsv1.BrokerState, message string, partitions int) *pdsv1.TopicStatusReport {
	return &pdsv1.TopicStatusReport{
		TenantId:   t.GetTenantId(),
		TopicName:  t.GetTopicName(),
		TopicId:    t.GetId(),
		State:      state,
		Message:    message,
		Partitions: int32(partitions), // at most 128, the topic limit
	}
}

// reportQueue holds the newest undelivered report per topic id, between the sync loop and the reporter.
type reportQueue struct {
	mu      sync.Mutex
	pending map[string]*pdsv1.TopicStatusReport
	wake    chan struct{} // buffered 1: a report arrived
}

func newReportQueue() *reportQueue {
	return &reportQueue{pending: map[string]*pdsv1.TopicStatusReport{}, wake: make(chan struct{}, 1)}
}

func (q *reportQueue) put(r *pdsv1.TopicStatusReport) {
	q.mu.Lock()
	q.pending[r.GetTopicId()] = r
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *reportQueue) drop(topicID string) {
	q.mu.Lock()
	delete(q.pending, topicID)
	q.mu.Unlock()
}

// take removes and returns every pending report, ordered by tenant and topic name.
func (q *reportQueue) take() []*pdsv1.TopicStatusReport {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*pdsv1.TopicStatusReport, 0, len(q.pending))
	for _, r := range q.pending {
		out = append(out, r)
	}
	clear(q.pending)
	slices.SortFunc(out, func(a, b *pdsv1.TopicStatusReport) int {
		return cmp.Or(cmp.Compare(a.GetTenantId(), b.GetTenantId()), cmp.Compare(a.GetTopicName(), b.GetTopicName()))
	})
	return out
}

// giveBack returns reports that could not be delivered, unless a newer one for the topic arrived meanwhile.
func (q *reportQueue) giveBack(reports []*pdsv1.TopicStatusReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range reports {
		if _, newer := q.pending[r.GetTopicId()]; !newer {
			q.pending[r.GetTopicId()] = r
		}
	}
}

// runReporter delivers queued reports until ctx ends; after a failed delivery it waits with backoff,
// unless a new report arrives first.
func (s *BrokerSync) runReporter(ctx context.Context) {
	failures := 0
	var retryAt <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reports.wake:
		case <-retryAt:
		}
		retryAt = nil
		batch := s.reports.take()
		if len(batch) == 0 {
			continue
		}
		reportCtx, cancel := context.WithTimeout(ctx, s.opts.ReportTimeout)
		err := s.deps.Reporter.ReportTopicStatus(reportCtx, batch)
		cancel()
		if err == nil {
			failures = 0
			continue
		}
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			// Sending the same reports again cannot succeed; newer outcomes of these topics still will.
			s.log.Error("the control plane rejected topic reports; dropping them", "topics", len(batch), "error", err)
			continue
		}
		s.reports.giveBack(batch)
		if ctx.Err() != nil {
			return
		}
		failures++
		pause := backoff(s.opts.RetryMin, s.opts.RetryMax, failures)
		s.log.Warn("reporting topic status to the control plane failed; keeping the reports to send again",
			"topics", len(batch), "failures", failures, "retry_in", pause, "error", err)
		retryAt = time.After(pause)
	}
}
