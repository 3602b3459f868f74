// Package pulsarraw is the load tool's raw-client baseline on Pulsar: the same events and topology as PDS
// on its Pulsar driver, sent and received with pulsar-client-go alone, so PDS's added latency and CPU per
// event can be read against it.
//
// Settings, chosen to be the client's fast path and to match what PDS's driver asks of Pulsar:
//   - Prepare creates tenant "load-<RunID>", namespace "bench", the partitioned topic and one durable
//     subscription per SubscriptionSpec at the earliest message (pulsarsetup).
//   - One producer, shared by every Publisher (as PDS's driver shares one per topic): batching on, with
//     BatchingMaxPublishDelay = Options.BatchingDelay (1 ms, as in Pulsar's published benchmarks) and the
//     client's other batching defaults (1000 messages, 128 KiB); key-based batches, as in PDS's driver,
//     because Key_Shared consumers need one key per batch to keep each key's order (Options.MixedKeyBatches
//     trades that for speed); each message routed to routing.Partition(routing key), the partition PDS
//     picks. Payload: the protobuf encoding of the event; properties event_id, data_type, priority,
//     routing_key and target_workflows as PDS writes them.
//   - One Key_Shared consumer per stream on its subscription, receiver queue 1000 per partition (the
//     client's default, also pulsar-perf's), read from Chan(), acknowledged one by one with the client's
//     default grouped acknowledgements (sent every 100 ms or 1000 acks). The filter decides from the
//     properties, without decoding the payload; events it rejects are acknowledged and not reported.
package pulsarraw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"

	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarsetup"
)

const (
	// DefaultBatchingDelay applies when Options.BatchingDelay is zero.
	DefaultBatchingDelay = time.Millisecond
	// ReceiverQueueSize is each partition consumer's prefetch.
	ReceiverQueueSize = 1000
)

// Options configure New.
type Options struct {
	// ServiceURL is the binary protocol endpoint, e.g. pulsar://127.0.0.1:6650. Required.
	ServiceURL string
	// AdminURL is the web service endpoint, e.g. http://127.0.0.1:8080. Required.
	AdminURL string
	// BatchingDelay is the producer's BatchingMaxPublishDelay. Zero means DefaultBatchingDelay (1 ms).
	BatchingDelay time.Duration
	// MixedKeyBatches uses the client's default batch builder, whose batches mix keys, instead of the
	// key-based one. With many keys per partition it publishes much faster (a producer alone on the busy
	// 2-core development VM, 485 keys over 16 partitions, 1000 events in flight: about 51K/s against
	// 11K/s, key-based batches stalling for ~400 ms at times), but Key_Shared then dispatches a batch whole by one key, so a key's order
	// across a subscription's streams is no longer kept: not the guarantee PDS gives. False (the default)
	// keeps PDS's guarantee and PDS's driver setting.
	MixedKeyBatches bool
	// Processes are the server processes to measure beside the load tool (e.g. "pulsar": pid). Nil means
	// none.
	Processes map[string]int
	// Logger receives the client's warnings and errors. Nil discards them.
	Logger *slog.Logger
}

// System is the raw-client baseline. Create it with New.
type System struct {
	opts Options

	mu       sync.Mutex
	admin    *pulsarsetup.Admin
	client   pulsar.Client
	topology loadgen.Topology
	names    pulsarsetup.Names
	producer pulsar.Producer // shared by every publisher; nil until the first NewPublisher
	prepared bool
}

var _ loadgen.System = (*System)(nil)

// New returns the baseline; it connects in Prepare.
func New(opts Options) loadgen.System {
	if opts.BatchingDelay <= 0 {
		opts.BatchingDelay = DefaultBatchingDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &System{opts: opts}
}

// Name implements loadgen.System.
func (s *System) Name() string { return "pulsar-raw" }

// Processes implements loadgen.System.
func (s *System) Processes() map[string]int { return s.opts.Processes }

// Prepare creates the run's tenant, namespace, topic and subscriptions and connects the client.
func (s *System) Prepare(ctx context.Context, topology loadgen.Topology) error {
	if s.opts.ServiceURL == "" {
		return errors.New("pulsar-raw: ServiceURL is required")
	}
	admin, err := pulsarsetup.NewAdmin(s.opts.AdminURL)
	if err != nil {
		return fmt.Errorf("pulsar-raw: %w", err)
	}
	client, err := pulsar.NewClient(pulsar.ClientOptions{
		URL:    s.opts.ServiceURL,
		Logger: pulsarlog.NewLoggerWithSlog(s.opts.Logger),
	})
	if err != nil {
		return fmt.Errorf("pulsar-raw: client for %s: %w", s.opts.ServiceURL, err)
	}
	s.mu.Lock()
	s.admin, s.client, s.topology = admin, client, topology
	s.names = pulsarsetup.NamesOf(topology)
	s.prepared = true
	s.mu.Unlock()
	if _, err := admin.Prepare(ctx, topology); err != nil {
		return fmt.Errorf("pulsar-raw: %w", err)
	}
	return nil
}

// Cleanup closes the client (and with it every producer and consumer) and deletes what Prepare created.
func (s *System) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.prepared {
		return nil
	}
	s.prepared = false
	if s.producer != nil {
		s.producer.Close()
		s.producer = nil
	}
	s.client.Close()
	if err := s.admin.Cleanup(ctx, s.names); err != nil {
		return fmt.Errorf("pulsar-raw: %w", err)
	}
	return nil
}

func (s *System) state() (pulsar.Client, loadgen.Topology, pulsarsetup.Names, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.prepared {
		return nil, loadgen.Topology{}, pulsarsetup.Names{}, errors.New("pulsar-raw: not prepared")
	}
	return s.client, s.topology, s.names, nil
}

// NewPublisher returns a publisher on the run's producer, created by the first call. Publishers share one
// producer, as every Publish call of a PDS data plane shares its driver's producer: concurrent publishers
// fill the same batches.
func (s *System) NewPublisher(_ context.Context) (loadgen.Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.prepared {
		return nil, errors.New("pulsar-raw: not prepared")
	}
	if s.producer != nil {
		return &publisher{producer: s.producer}, nil
	}
	builder := pulsar.KeyBasedBatchBuilder
	if s.opts.MixedKeyBatches {
		builder = pulsar.DefaultBatchBuilder
	}
	producer, err := s.client.CreateProducer(pulsar.ProducerOptions{
		Topic: s.names.Topic,
		MessageRouter: func(msg *pulsar.ProducerMessage, md pulsar.TopicMetadata) int {
			return routing.Partition(msg.Key, int(md.NumPartitions()))
		},
		BatchingMaxPublishDelay: s.opts.BatchingDelay,
		BatcherBuilderType:      builder,
	})
	if err != nil {
		return nil, fmt.Errorf("pulsar-raw: create producer on %s: %w", s.names.Topic, err)
	}
	s.producer = producer
	return &publisher{producer: producer}, nil
}

// publisher is safe for concurrent Publish calls.
type publisher struct {
	producer pulsar.Producer
}

// Publish sends every event asynchronously and returns once Pulsar has acknowledged all of them, or with
// the first error.
func (p *publisher) Publish(ctx context.Context, events []loadgen.Event) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	defer wg.Wait() // an encoding error still waits for the events already sent
	for i := range events {
		ev := &events[i]
		payload, err := ev.Message.MarshalVT()
		if err != nil {
			return fmt.Errorf("pulsar-raw: encode event %d: %w", ev.Seq, err)
		}
		wg.Add(1)
		msg := &pulsar.ProducerMessage{Payload: payload, Key: ev.RoutingKey, Properties: pulsarsetup.Properties(ev)}
		p.producer.SendAsync(ctx, msg, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("pulsar-raw: publish event %d: %w", ev.Seq, err)
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}

// Close does nothing: the shared producer is closed by Cleanup.
func (p *publisher) Close() error { return nil }

// OpenStream attaches a Key_Shared consumer to the subscription and reads it until Close.
func (s *System) OpenStream(_ context.Context, subscription, stream int, deliver func(loadgen.Delivery)) (loadgen.Stream, error) {
	client, topology, names, err := s.state()
	if err != nil {
		return nil, err
	}
	if subscription < 0 || subscription >= len(topology.Subscriptions) {
		return nil, fmt.Errorf("pulsar-raw: subscription %d out of range of %d", subscription, len(topology.Subscriptions))
	}
	spec := topology.Subscriptions[subscription]
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       names.Topic,
		SubscriptionName:            names.Subscriptions[subscription],
		Name:                        fmt.Sprintf("%s-%d", names.Subscriptions[subscription], stream),
		Type:                        pulsar.KeyShared,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
		ReceiverQueueSize:           ReceiverQueueSize,
	})
	if err != nil {
		return nil, fmt.Errorf("pulsar-raw: subscribe stream %d of %s: %w", stream, names.Subscriptions[subscription], err)
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	st := &consumerStream{
		ctx:      streamCtx,
		cancel:   cancel,
		consumer: consumer,
		spec:     spec,
		deliver:  deliver,
		sub:      subscription,
		stream:   stream,
		log:      s.opts.Logger,
		stopped:  make(chan struct{}),
	}
	go st.run()
	return st, nil
}

type consumerStream struct {
	consumer    pulsar.Consumer
	spec        loadgen.SubscriptionSpec
	deliver     func(loadgen.Delivery)
	sub, stream int
	log         *slog.Logger

	ctx       context.Context
	cancel    context.CancelFunc
	stopped   chan struct{}
	closeOnce sync.Once
}

func (c *consumerStream) run() {
	defer close(c.stopped)
	messages := c.consumer.Chan()
	for {
		var cm pulsar.ConsumerMessage
		select {
		case cm = <-messages:
		case <-c.ctx.Done():
			return
		}
		now := time.Now()
		ev, err := pulsarsetup.EventFromProperties(cm.Properties())
		if err != nil {
			// Not an event of this run: nobody counts it, so settle it.
			c.log.Warn("pulsar-raw: skipping a message", "err", err)
		} else if c.spec.Matches(&ev) {
			c.deliver(loadgen.Delivery{Subscription: c.sub, Stream: c.stream, Seq: ev.Seq, ReceivedAt: now})
			if !c.spec.Process(c.ctx) {
				return // closed before acknowledging: Pulsar redelivers it
			}
		}
		if err := c.consumer.Ack(cm.Message); err != nil {
			c.log.Warn("pulsar-raw: ack failed", "err", err)
		}
	}
}

// Close stops reading and closes the consumer, which flushes its pending acknowledgements.
func (c *consumerStream) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.stopped
		c.consumer.Close()
	})
	return nil
}
