// Package delivery streams a subscription's events from the broker to workflows: it keeps the events the
// subscription's target workflow and filters accept, bounds how many a stream holds unacknowledged, and
// routes acknowledgements back to the broker consumer that delivered them.
package delivery

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"go.opentelemetry.io/otel"
)

// Errors Open and Next return, wrapped; match them with errors.Is.
var (
	// ErrSubscriptionNotFound: the tenant has no such subscription (or it was deleted, or deleted and
	// created again, while streaming).
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrSubscriptionPaused: the subscription's status is "paused"; its events wait at the broker.
	ErrSubscriptionPaused = errors.New("subscription paused")
	// ErrTopicNotFound: the subscription's topic does not exist.
	ErrTopicNotFound = errors.New("topic not found")
	// ErrTopicChanged: while streaming, the subscription was moved to another topic (or its topic was
	// deleted and created again). The client opens a new stream to read the new topic.
	ErrTopicChanged = errors.New("subscription topic changed")
	// ErrWorkflowChanged: while streaming, the subscription's subscriber_workflow changed. A broker that
	// routes by workflow reads only the old workflow's records for this stream, so it ends; the client opens
	// a new stream, which reads the new workflow's records.
	ErrWorkflowChanged = errors.New("subscription workflow changed")
	// ErrMaxInFlightOutOfRange: StreamOptions.MaxInFlight is negative or above MaxInFlightLimit. The error
	// also holds an apierr.FieldError for "max_in_flight", so apierr.FromError makes it InvalidArgument.
	ErrMaxInFlightOutOfRange = errors.New("max_in_flight out of range")
	// ErrSessionClosed: the session was closed (by Session.Close or Service.Close).
	ErrSessionClosed = errors.New("delivery session closed")
	// ErrServiceClosed: Open was called after Service.Close.
	ErrServiceClosed = errors.New("delivery service closed")
)

const (
	// MaxInFlightLimit is the largest max_in_flight a stream may ask for.
	MaxInFlightLimit = 10000

	defaultAckDeadline = 30 * time.Second
	defaultMaxInFlight = 1000

	// configPollInterval bounds how long a change of a subscription (pause, delete, new filters) takes to
	// reach a stream that is waiting for events. Deps.Config has no change signal, and reading it is one
	// atomic load, so polling is cheap.
	configPollInterval = 100 * time.Millisecond

	statusPaused = "paused"
)

// Deps are the Service's collaborators; none may be nil.
type Deps struct {
	Broker broker.Broker
	// Config returns the node's newest replicated config. It is called on every Next, so it must be cheap
	// (configfsm.FSM.Current is one atomic load).
	Config func() *configfsm.Config
	Logger *slog.Logger
}

// Options tune the Service.
type Options struct {
	// AckDeadline: an event handed out and not acknowledged within it is delivered again. Zero means 30s.
	AckDeadline time.Duration
	// DefaultMaxInFlight is the unacknowledged-event bound of a stream that asks for 0. Zero means 1000;
	// at most MaxInFlightLimit.
	DefaultMaxInFlight int
}

// StreamOptions tune one stream.
type StreamOptions struct {
	// MaxInFlight bounds the events handed out and not yet acknowledged. 0 means Options.DefaultMaxInFlight;
	// at most MaxInFlightLimit. With AutoAck it bounds the events returned by one Next.
	MaxInFlight int
	// AutoAck acknowledges events at the broker as they are handed out (at-most-once delivery); their
	// ack ids are empty.
	AutoAck bool
	// EncodedEvents is for a caller that sends events in the protobuf binary encoding only. Next may then
	// leave a DeliveredEvent's event undecoded: its Event is nil and its unknown fields hold the event
	// field (number 2) already encoded, which any protobuf encoder writes out as it is. Such events are
	// never decoded when the subscription's filters decide from the stored bytes.
	EncodedEvents bool
}

// Service opens delivery sessions and routes acknowledgements to them. All methods are safe for
// concurrent use.
type Service struct {
	deps               Deps
	ackDeadline        time.Duration
	defaultMaxInFlight int
	metrics            *metrics
	decoded            *decodedCache

	mu       sync.RWMutex
	sessions map[string]*Session
	// sharing holds, per topic ID, which of its events more than one open session may take.
	sharing map[string]*topicSharing
	closed  bool

	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// NewService builds a Service and starts watching the config for changes to streamed subscriptions.
func NewService(deps Deps, opts Options) (*Service, error) {
	switch {
	case deps.Broker == nil:
		return nil, errors.New("new delivery service: Deps.Broker is nil")
	case deps.Config == nil:
		return nil, errors.New("new delivery service: Deps.Config is nil")
	case deps.Logger == nil:
		return nil, errors.New("new delivery service: Deps.Logger is nil")
	case opts.AckDeadline < 0:
		return nil, fmt.Errorf("new delivery service: AckDeadline %s is negative", opts.AckDeadline)
	case opts.DefaultMaxInFlight < 0 || opts.DefaultMaxInFlight > MaxInFlightLimit:
		return nil, fmt.Errorf("new delivery service: DefaultMaxInFlight %d not in [0, %d]",
			opts.DefaultMaxInFlight, MaxInFlightLimit)
	}
	m, err := newMetrics(otel.GetMeterProvider().Meter("github.com/pds-platform/pds/dataplane/internal/delivery"))
	if err != nil {
		return nil, fmt.Errorf("new delivery service: %w", err)
	}
	s := &Service{
		deps:               deps,
		ackDeadline:        opts.AckDeadline,
		defaultMaxInFlight: opts.DefaultMaxInFlight,
		metrics:            m,
		decoded:            newDecodedCache(),
		sessions:           map[string]*Session{},
		sharing:            map[string]*topicSharing{},
		watchDone:          make(chan struct{}),
	}
	if s.ackDeadline == 0 {
		s.ackDeadline = defaultAckDeadline
	}
	if s.defaultMaxInFlight == 0 {
		s.defaultMaxInFlight = defaultMaxInFlight
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	go s.watchConfig(ctx)
	return s, nil
}

// Open starts delivering the subscription's events. It creates the topic at the broker if it is missing,
// so a subscription can stream before the first publish. The caller must Close the session; its
// unacknowledged events are then delivered again, to this or another session.
func (s *Service) Open(ctx context.Context, tenantID, subscriptionID string, opts StreamOptions) (*Session, error) {
	maxInFlight := opts.MaxInFlight
	if maxInFlight < 0 || maxInFlight > MaxInFlightLimit {
		fieldErr := apierr.Errorf("max_in_flight", "must be 0 (the node default, %d) to %d (got %d)",
			s.defaultMaxInFlight, MaxInFlightLimit, maxInFlight)
		return nil, fmt.Errorf("open delivery of subscription %q: %w: %w", subscriptionID, ErrMaxInFlightOutOfRange, fieldErr)
	}
	if maxInFlight == 0 {
		maxInFlight = s.defaultMaxInFlight
	}
	if s.isClosed() {
		return nil, ErrServiceClosed
	}
	sub, topic, err := resolve(s.deps.Config(), tenantID, subscriptionID)
	if err != nil {
		return nil, fmt.Errorf("open delivery of subscription %q: %w", subscriptionID, err)
	}
	ref, err := SubscriptionRef(sub.Proto, topic)
	if err != nil {
		return nil, fmt.Errorf("open delivery of subscription %q: %w", subscriptionID, err)
	}
	if err := s.deps.Broker.EnsureTopic(ctx, ref.Topic); err != nil {
		return nil, fmt.Errorf("open delivery of subscription %q: ensure topic %q: %w", subscriptionID, ref.Topic.Name, err)
	}
	consumer, err := s.deps.Broker.Subscribe(ctx, ref, broker.ConsumerOptions{AckDeadline: s.ackDeadline, MaxUnacked: maxInFlight})
	if err != nil {
		return nil, fmt.Errorf("open delivery of subscription %q: subscribe: %w", subscriptionID, err)
	}
	id, err := newSessionID()
	if err != nil {
		_ = consumer.Close()
		return nil, fmt.Errorf("open delivery of subscription %q: %w", subscriptionID, err)
	}
	sess := newSession(s, id, tenantID, subscriptionID, ref, consumer, maxInFlight, opts)
	sess.seenSub.Store(sub)
	sess.seenTopic.Store(topic)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = consumer.Close()
		return nil, ErrServiceClosed
	}
	s.sessions[id] = sess
	s.sharing[ref.Topic.ID] = newTopicSharing(s.sessions, ref.Topic.ID)
	s.mu.Unlock()
	return sess, nil
}

// EncodedEvent returns the protobuf encoding of ev, written from the event's stored bytes without
// marshalling, when ev is the Event of a DeliveredEvent this Service handed out recently; ok is false
// otherwise (then marshal ev).
func (s *Service) EncodedEvent(ev *pdsv1.PortfolioDistributed) (_ []byte, ok bool) {
	return s.decoded.encodedDistributed(ev)
}

// Acknowledge confirms delivered events by their ack ids. Ack ids this node does not hold for the
// subscription (malformed, from another node, of a closed session, already acknowledged, or past their
// ack deadline and so due for redelivery) are returned in unknown; that is not an error. err reports a
// broker failure: the events it names will be delivered again.
func (s *Service) Acknowledge(ctx context.Context, tenantID, subscriptionID string, ackIDs []string) (unknown []string, err error) {
	type group struct {
		session *Session
		ackIDs  []string
		tokens  []string
	}
	var groups []group
	var lastID string
	var last *Session
	for _, ackID := range ackIDs {
		sessionID, token, ok := strings.Cut(ackID, ".")
		// The ack ids of one call nearly always come from one stream: look its session up once.
		if last == nil || sessionID != lastID {
			lastID, last = sessionID, s.session(sessionID)
		}
		sess := last
		if !ok || token == "" || sess == nil || sess.tenantID != tenantID || sess.subscriptionID != subscriptionID {
			unknown = append(unknown, ackID)
			continue
		}
		i := 0
		for i < len(groups) && groups[i].session != sess {
			i++
		}
		if i == len(groups) {
			groups = append(groups, group{session: sess})
		}
		groups[i].ackIDs = append(groups[i].ackIDs, ackID)
		groups[i].tokens = append(groups[i].tokens, token)
	}
	var errs []error
	for _, g := range groups {
		missing, err := g.session.acknowledge(ctx, g.tokens)
		for _, i := range missing {
			unknown = append(unknown, g.ackIDs[i])
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return unknown, fmt.Errorf("acknowledge for subscription %q: %w", subscriptionID, err)
	}
	return unknown, nil
}

// Close closes every session and stops the Service. Open fails afterwards.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sessions := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()

	s.stopWatch()
	<-s.watchDone
	var errs []error
	for _, sess := range sessions {
		if err := sess.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close delivery service: %w", err)
	}
	return nil
}

func (s *Service) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

func (s *Service) session(id string) *Session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sessions[id]
}

func (s *Service) removeSession(sess *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
		topicID := sess.ref.Topic.ID
		if sharing := newTopicSharing(s.sessions, topicID); sharing != nil {
			s.sharing[topicID] = sharing
		} else {
			delete(s.sharing, topicID)
		}
	}
}

// topicSharing returns which events of the topic more than one open session of this node may take.
func (s *Service) topicSharing(topicID string) *topicSharing {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sharing[topicID]
}

// watchConfig wakes the sessions whose subscription or topic changed, so a stream waiting for events
// notices a pause, a delete or a move without needing an event to arrive first.
func (s *Service) watchConfig(ctx context.Context) {
	defer close(s.watchDone)
	ticker := time.NewTicker(configPollInterval)
	defer ticker.Stop()
	var last *configfsm.Config
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		cfg := s.deps.Config()
		if cfg == last {
			continue
		}
		last = cfg
		s.mu.RLock()
		sessions := make([]*Session, 0, len(s.sessions))
		for _, sess := range s.sessions {
			sessions = append(sessions, sess)
		}
		s.mu.RUnlock()
		for _, sess := range sessions {
			sess.configChanged(cfg)
		}
	}
}

// resolve finds a streamable subscription and its topic in cfg.
func resolve(cfg *configfsm.Config, tenantID, subscriptionID string) (*configfsm.Subscription, *pdsv1.Topic, error) {
	sub, ok := cfg.Subscription(tenantID, subscriptionID)
	if !ok {
		return nil, nil, ErrSubscriptionNotFound
	}
	if sub.Proto.GetStatus() == statusPaused {
		return sub, nil, ErrSubscriptionPaused
	}
	topic, ok := cfg.Topic(tenantID, sub.Proto.GetTopicName())
	if !ok {
		return sub, nil, fmt.Errorf("%w: %q", ErrTopicNotFound, sub.Proto.GetTopicName())
	}
	return sub, topic, nil
}

// SubscriptionRef names a subscription at the broker: its streams read it, and Seek moves it.
func SubscriptionRef(sub *pdsv1.Subscription, topic *pdsv1.Topic) (broker.SubscriptionRef, error) {
	var start time.Time
	if createdAt := sub.GetCreatedAt(); createdAt != "" {
		var err error
		start, err = time.Parse(time.RFC3339Nano, createdAt)
		if err != nil {
			return broker.SubscriptionRef{}, fmt.Errorf("parse created_at of subscription %q: %w", sub.GetSubscriptionId(), err)
		}
	}
	partitions := int(topic.GetPartitions())
	if partitions == 0 {
		partitions = 1
	}
	return broker.SubscriptionRef{
		TenantID: sub.GetTenantId(),
		ID:       sub.GetId(),
		Topic: broker.TopicRef{
			TenantID:   topic.GetTenantId(),
			ID:         topic.GetId(),
			Name:       topic.GetTopicName(),
			Partitions: partitions,
		},
		StartTime: start,
		Workflow:  sub.GetSubscriberWorkflow(),
	}, nil
}

var sessionIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSessionID returns 80 random bits, lower-case base32: printable and free of the "." that separates
// it from the broker token in an ack id.
func newSessionID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new session id: %w", err)
	}
	return sessionIDEncoding.EncodeToString(b[:]), nil
}
