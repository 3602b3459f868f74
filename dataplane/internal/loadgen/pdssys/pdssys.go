// Package pdssys is PDS as a load-tool System: topics and subscriptions through the control plane's admin
// API, events through the data plane's Publish, and subscriber streams through StreamPortfolio with explicit,
// batched acknowledgements (the at-least-once path, not auto_ack).
//
// Every call uses the gRPC protocol over cleartext HTTP/2 (h2c), as a high-throughput client would: a
// stream's or publisher's calls share one HTTP/2 connection, several streams share a connection
// (Options.StreamsPerConnection), and each publisher has its own.
package pdssys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Options configure the PDS system.
type Options struct {
	// Name is the system's name in reports, e.g. "pds-embedded". Empty means "pds".
	Name string
	// ControlPlaneURL and DataPlaneURL are the HTTP base URLs of the control plane (admin API) and of the
	// data plane (Publish, StreamPortfolio, Acknowledge, /readyz). Required.
	ControlPlaneURL string
	DataPlaneURL    string
	// Processes are the server processes to measure (e.g. "dataplane": pid, "controlplane": pid).
	Processes map[string]int
	// StreamsPerConnection is how many subscriber streams share one HTTP/2 connection. Zero means 8.
	StreamsPerConnection int
	// MaxInFlight is the max_in_flight of streams whose SubscriptionSpec leaves it 0. Zero means 1000.
	MaxInFlight int
	// AckInterval is the longest an acknowledgement waits to be sent with others. Zero means 20ms: far
	// below the ack deadline and, with AckBatch at a quarter of max_in_flight, never what holds a stream
	// back, while 5 ms made Acknowledge calls a sixth of the load tool's CPU at 8K events/s on 10 streams.
	AckInterval time.Duration
	// AckBatch sends the pending acknowledgements of a stream as soon as this many wait. Zero means a
	// quarter of the stream's max_in_flight (at least 1), so flow control never waits for the interval.
	AckBatch int
	// FullDecode decodes every delivered event completely, as a subscriber that reads the events does. False
	// (the default) decodes only each event's ack_id and event_id (see leanCodec).
	FullDecode bool
	// ReadyTimeout bounds Prepare's wait for the data plane to know the topic and subscriptions. Zero
	// means 60s.
	ReadyTimeout time.Duration
	// Logger receives stream errors and reconnects. Nil means slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultStreamsPerConnection = 8
	DefaultMaxInFlight          = 1000
	DefaultAckInterval          = 20 * time.Millisecond
	DefaultReadyTimeout         = 60 * time.Second
	// readyPoll is how often Prepare checks whether the data plane caught up.
	readyPoll = 50 * time.Millisecond
)

// System is PDS as a loadgen.System. Create it with New.
type System struct {
	opts          Options
	topics        pdsv1connect.TopicServiceClient
	subscriptions pdsv1connect.SubscriptionServiceClient
	adminHTTP     *http.Client

	topology loadgen.Topology
	// subscriptionIDs are the PDS subscription ids of topology.Subscriptions, by index.
	subscriptionIDs []string
	topicCreated    bool
	created         []string

	mu    sync.Mutex
	conns map[int]*h2cClient
}

var _ loadgen.System = (*System)(nil)

// New returns the PDS system; it does not contact PDS until Prepare.
func New(opts Options) *System {
	if opts.Name == "" {
		opts.Name = "pds"
	}
	if opts.StreamsPerConnection <= 0 {
		opts.StreamsPerConnection = DefaultStreamsPerConnection
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.AckInterval <= 0 {
		opts.AckInterval = DefaultAckInterval
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	admin := &http.Client{Timeout: 30 * time.Second}
	return &System{
		opts:          opts,
		adminHTTP:     admin,
		topics:        pdsv1connect.NewTopicServiceClient(admin, opts.ControlPlaneURL),
		subscriptions: pdsv1connect.NewSubscriptionServiceClient(admin, opts.ControlPlaneURL),
		conns:         map[int]*h2cClient{},
	}
}

// Name implements loadgen.System.
func (s *System) Name() string { return s.opts.Name }

// Processes implements loadgen.System.
func (s *System) Processes() map[string]int { return s.opts.Processes }

// h2cClient is one HTTP/2 cleartext connection and the PortfolioStream client on it.
type h2cClient struct {
	transport *http.Transport
	stream    pdsv1connect.PortfolioStreamClient
}

func newH2CClient(baseURL string, fullDecode bool) *h2cClient {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	transport := &http.Transport{
		Protocols:           &protocols,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
	}
	options := []connect.ClientOption{
		connect.WithGRPC(),
		// connect-go clients accept gzip by default, and the data plane then compresses every response:
		// CPU that neither the raw Pulsar client nor PDS's other clients spend on 300–500 byte events.
		connect.WithAcceptCompression("gzip", nil, nil),
	}
	if !fullDecode {
		options = append(options, connect.WithCodec(leanCodec{}))
	}
	return &h2cClient{
		transport: transport,
		stream:    pdsv1connect.NewPortfolioStreamClient(&http.Client{Transport: transport}, baseURL, options...),
	}
}

// Prepare creates the topic and the subscriptions and waits until the data plane has them and the broker
// holds the topic's partitions.
func (s *System) Prepare(ctx context.Context, topology loadgen.Topology) error {
	s.topology = topology
	topic, err := s.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: topology.Topic, DataType: topology.DataType, Partitions: int32(topology.Partitions),
	}}))
	if err != nil {
		return fmt.Errorf("create topic %q: %w", topology.Topic, err)
	}
	s.topicCreated = true
	version := topic.Msg.GetConfigVersion()
	s.subscriptionIDs = make([]string, len(topology.Subscriptions))
	for i, spec := range topology.Subscriptions {
		id := topology.RunID + "-" + spec.Name
		resp, err := s.subscriptions.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{
			Subscription: &pdsv1.Subscription{
				SubscriptionId:     id,
				TopicName:          topology.Topic,
				SubscriberWorkflow: spec.Workflow,
				Filters:            filters(spec.Filter),
			},
		}))
		if err != nil {
			return fmt.Errorf("create subscription %q: %w", id, err)
		}
		s.created = append(s.created, id)
		s.subscriptionIDs[i] = id
		version = max(version, resp.Msg.GetConfigVersion())
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	if err := s.waitConfigVersion(ctx, version); err != nil {
		return err
	}
	return s.waitTopicReady(ctx, topology)
}

func filters(f *loadgen.Filter) *pdsv1.SubscriptionFilters {
	if f == nil {
		return nil
	}
	return &pdsv1.SubscriptionFilters{DataTypes: f.DataTypes, MinPriority: f.MinPriority, Cel: f.CEL}
}

// waitConfigVersion polls the data plane's /readyz until its configuration reaches version.
func (s *System) waitConfigVersion(ctx context.Context, version uint64) error {
	var last string
	for {
		have, err := s.configVersion(ctx)
		if err == nil && have >= version {
			return nil
		}
		last = fmt.Sprintf("config version %d, %v", have, err)
		if err := pause(ctx); err != nil {
			return fmt.Errorf("wait for the data plane to apply config version %d (last: %s): %w", version, last, err)
		}
	}
}

func (s *System) configVersion(ctx context.Context) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.opts.DataPlaneURL+"/readyz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.adminHTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		ConfigVersion uint64 `json:"config_version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("decode /readyz (HTTP %d): %w", resp.StatusCode, err)
	}
	return body.ConfigVersion, nil
}

// waitTopicReady polls the topic until a data-plane node reported that the broker holds its partitions.
func (s *System) waitTopicReady(ctx context.Context, topology loadgen.Topology) error {
	var last *pdsv1.TopicBrokerStatus
	for {
		resp, err := s.topics.GetTopic(ctx, connect.NewRequest(&pdsv1.GetTopicRequest{TopicName: topology.Topic}))
		if err == nil {
			last = resp.Msg.GetTopic().GetBrokerStatus()
			if last.GetState() == pdsv1.BrokerState_BROKER_STATE_READY && int(last.GetPartitions()) >= topology.Partitions {
				return nil
			}
		}
		if err := pause(ctx); err != nil {
			return fmt.Errorf("wait for the broker to hold topic %q with %d partitions (last status: %v): %w",
				topology.Topic, topology.Partitions, last, err)
		}
	}
}

func pause(ctx context.Context) error {
	t := time.NewTimer(readyPoll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// connFor returns the connection stream number n (over the whole topology) uses.
func (s *System) connFor(n int) *h2cClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := n / s.opts.StreamsPerConnection
	c, ok := s.conns[k]
	if !ok {
		c = newH2CClient(s.opts.DataPlaneURL, s.opts.FullDecode)
		s.conns[k] = c
	}
	return c
}

// OpenStream implements loadgen.System.
func (s *System) OpenStream(ctx context.Context, subscription, stream int, deliver func(loadgen.Delivery)) (loadgen.Stream, error) {
	if subscription < 0 || subscription >= len(s.subscriptionIDs) {
		return nil, fmt.Errorf("open stream: subscription %d of %d", subscription, len(s.subscriptionIDs))
	}
	n := stream
	for i := range subscription {
		n += max(s.topology.Subscriptions[i].Streams, 1)
	}
	spec := s.topology.Subscriptions[subscription]
	maxInFlight := spec.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = s.opts.MaxInFlight
	}
	ackBatch := s.opts.AckBatch
	if ackBatch <= 0 {
		ackBatch = max(1, maxInFlight/4)
	}
	st := &subscriberStream{
		client:         s.connFor(n).stream,
		subscriptionID: s.subscriptionIDs[subscription],
		subscription:   subscription,
		index:          stream,
		maxInFlight:    int32(maxInFlight),
		delay:          spec.ProcessingDelay,
		deliver:        deliver,
		logger:         s.opts.Logger,
		done:           make(chan struct{}),
	}
	st.acks = newAcker(st.client, st.subscriptionID, ackBatch, s.opts.AckInterval, s.opts.Logger)
	if err := st.open(ctx); err != nil {
		st.acks.close()
		return nil, err
	}
	return st, nil
}

// NewPublisher implements loadgen.System: a publisher on a connection of its own.
func (s *System) NewPublisher(context.Context) (loadgen.Publisher, error) {
	return &publisher{conn: newH2CClient(s.opts.DataPlaneURL, s.opts.FullDecode)}, nil
}

// Cleanup deletes the subscriptions and the topic Prepare created and closes idle connections.
func (s *System) Cleanup(ctx context.Context) error {
	var errs []error
	for _, id := range s.created {
		if _, err := s.subscriptions.DeleteSubscription(ctx, connect.NewRequest(&pdsv1.DeleteSubscriptionRequest{SubscriptionId: id})); err != nil {
			errs = append(errs, fmt.Errorf("delete subscription %q: %w", id, err))
		}
	}
	s.created = nil
	if s.topicCreated {
		if _, err := s.topics.DeleteTopic(ctx, connect.NewRequest(&pdsv1.DeleteTopicRequest{TopicName: s.topology.Topic})); err != nil {
			errs = append(errs, fmt.Errorf("delete topic %q: %w", s.topology.Topic, err))
		}
		s.topicCreated = false
	}
	s.mu.Lock()
	for k, c := range s.conns {
		c.transport.CloseIdleConnections()
		delete(s.conns, k)
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

type publisher struct{ conn *h2cClient }

// Publish sends the events in one Publish call, which returns once PDS stored them all.
func (p *publisher) Publish(ctx context.Context, events []loadgen.Event) error {
	msgs := make([]*pdsv1.PortfolioDistribution, len(events))
	for i := range events {
		msgs[i] = events[i].Message
	}
	resp, err := p.conn.stream.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: msgs}))
	if err != nil {
		return fmt.Errorf("publish %d events: %w", len(events), err)
	}
	if got := len(resp.Msg.GetEvents()); got != len(events) {
		return fmt.Errorf("publish %d events: the answer lists %d", len(events), got)
	}
	return nil
}

func (p *publisher) Close() error {
	p.conn.transport.CloseIdleConnections()
	return nil
}
