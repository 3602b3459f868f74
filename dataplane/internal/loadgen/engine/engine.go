// Package engine is the load tool's baseline for the embedded broker: the engine alone, in the load
// tool's process, with no PDS in the path (no API, no delivery sessions, no network), so PDS's added
// latency and CPU per event on the embedded broker can be read against it.
//
// Settings are the data plane's defaults (pds-dataplane opens the embedded broker with only its
// directory set, see internal/node): fsync after every write (EmbeddedOptions.SyncInterval 0), batches
// of up to 256 records or 512 KiB, 64 writes in flight, 7-day retention.
//   - Prepare opens the engine in Options.DataDir/<RunID> and creates the topic with its partitions.
//   - A Publisher calls the driver's Publish directly with one Record per event: the partition PDS picks
//     (routing.Partition of the routing key), the routing key, event_id, target workflows (which the
//     engine routes by) and the event's protobuf encoding as value (no properties: the embedded driver
//     does not keep them, and PDS builds none for it).
//   - Each SubscriptionSpec is one broker subscription with the spec's Workflow, so the engine hands it
//     only its workflow's and broadcast records; each of its streams is one broker consumer of it (as
//     each PDS stream is), with MaxUnacked = the spec's MaxInFlight (0 means the data plane's 1000),
//     receiving up to that many records at a time. The filter decodes each record's value, as PDS's
//     delivery does, and applies spec.Matches; records it rejects are acknowledged and not reported.
//     A batch's records are acknowledged together once handled; with a ProcessingDelay, one by one.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// tenantID is the broker tenant of every run.
const tenantID = "load"

// defaultMaxInFlight is the data plane's unacknowledged-event bound of a stream that asks for 0.
const defaultMaxInFlight = 1000

// Options configure New.
type Options struct {
	// DataDir holds each run's engine files, in a directory named after the RunID that Cleanup removes.
	// Empty means a new temporary directory.
	DataDir string
	// Logger receives the engine's warnings and errors. Nil discards them.
	Logger *slog.Logger
}

// System is the engine-alone baseline. Create it with New.
type System struct {
	opts Options

	mu       sync.Mutex
	dir      string
	broker   *broker.EmbeddedBroker
	topic    broker.TopicRef
	topology loadgen.Topology
}

var _ loadgen.System = (*System)(nil)

// New returns the baseline; it opens the engine in Prepare.
func New(opts Options) loadgen.System {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &System{opts: opts}
}

// Name implements loadgen.System.
func (s *System) Name() string { return "engine" }

// Processes is empty: the engine runs in the load tool's process, which the report measures anyway.
func (s *System) Processes() map[string]int { return map[string]int{} }

// Prepare opens the engine in a directory of its own and creates the run's topic.
func (s *System) Prepare(ctx context.Context, topology loadgen.Topology) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker != nil {
		return errors.New("engine: already prepared; Cleanup first")
	}
	if topology.Partitions < 1 {
		return fmt.Errorf("engine: %d partitions (want at least 1)", topology.Partitions)
	}
	var dir string
	var err error
	if s.opts.DataDir == "" {
		dir, err = os.MkdirTemp("", "pds-load-engine-")
	} else {
		dir = filepath.Join(s.opts.DataDir, filepath.Base(filepath.Clean("/"+topology.RunID)))
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return fmt.Errorf("engine: data directory: %w", err)
	}
	b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: dir, Logger: s.opts.Logger})
	if err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("engine: %w", err)
	}
	topic := broker.TopicRef{TenantID: tenantID, ID: topology.RunID, Name: topology.Topic, Partitions: topology.Partitions}
	if err := b.EnsureTopic(ctx, topic); err != nil {
		_ = b.Close()
		_ = os.RemoveAll(dir)
		return fmt.Errorf("engine: %w", err)
	}
	s.dir, s.broker, s.topic, s.topology = dir, b, topic, topology
	return nil
}

// Cleanup deletes the topic with its subscriptions, stops the engine and removes its directory.
func (s *System) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker == nil {
		return nil
	}
	err := errors.Join(s.broker.DeleteTopic(ctx, s.topic), s.broker.Close(), os.RemoveAll(s.dir))
	s.broker = nil
	if err != nil {
		return fmt.Errorf("engine: cleanup: %w", err)
	}
	return nil
}

func (s *System) state() (*broker.EmbeddedBroker, broker.TopicRef, loadgen.Topology, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker == nil {
		return nil, broker.TopicRef{}, loadgen.Topology{}, errors.New("engine: not prepared")
	}
	return s.broker, s.topic, s.topology, nil
}

// NewPublisher returns a publisher writing straight into the engine; it is safe for concurrent use.
func (s *System) NewPublisher(_ context.Context) (loadgen.Publisher, error) {
	b, topic, _, err := s.state()
	if err != nil {
		return nil, err
	}
	return &publisher{broker: b, topic: topic}, nil
}

type publisher struct {
	broker *broker.EmbeddedBroker
	topic  broker.TopicRef
}

// Publish stores the events as one call to the driver, which returns once they are durable.
func (p *publisher) Publish(ctx context.Context, events []loadgen.Event) error {
	records := make([]broker.Record, len(events))
	for i := range events {
		ev := &events[i]
		value, err := ev.Message.MarshalVT()
		if err != nil {
			return fmt.Errorf("engine: encode event %d: %w", ev.Seq, err)
		}
		records[i] = broker.Record{
			Partition: routing.Partition(ev.RoutingKey, p.topic.Partitions),
			Key:       ev.RoutingKey,
			EventID:   loadgen.EventIDFor(ev.Seq),
			Value:     value,
			// Shared with the event, which is read-only; the driver only reads it.
			TargetWorkflows: ev.TargetWorkflows,
		}
	}
	if err := p.broker.Publish(ctx, p.topic, records); err != nil {
		return fmt.Errorf("engine: publish %d events: %w", len(events), err)
	}
	return nil
}

func (p *publisher) Close() error { return nil }

// subscriptionRef is the broker subscription of spec number i: one per spec, shared by its streams.
func subscriptionRef(topic broker.TopicRef, runID string, i int, spec loadgen.SubscriptionSpec) broker.SubscriptionRef {
	return broker.SubscriptionRef{TenantID: tenantID, ID: fmt.Sprintf("%s-s%d", runID, i), Topic: topic, Workflow: spec.Workflow}
}

// OpenStream attaches a consumer to the subscription and reads it until Close.
func (s *System) OpenStream(ctx context.Context, subscription, stream int, deliver func(loadgen.Delivery)) (loadgen.Stream, error) {
	b, topic, topology, err := s.state()
	if err != nil {
		return nil, err
	}
	if subscription < 0 || subscription >= len(topology.Subscriptions) {
		return nil, fmt.Errorf("engine: subscription %d out of range of %d", subscription, len(topology.Subscriptions))
	}
	spec := topology.Subscriptions[subscription]
	maxInFlight := spec.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = defaultMaxInFlight
	}
	consumer, err := b.Subscribe(ctx, subscriptionRef(topic, topology.RunID, subscription, spec), broker.ConsumerOptions{MaxUnacked: maxInFlight})
	if err != nil {
		return nil, fmt.Errorf("engine: subscribe stream %d of subscription %d: %w", stream, subscription, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	c := &consumerStream{
		consumer: consumer, spec: spec, maxInFlight: maxInFlight, deliver: deliver,
		sub: subscription, stream: stream, log: s.opts.Logger,
		ctx: rctx, cancel: cancel, stopped: make(chan struct{}),
	}
	go c.run()
	return c, nil
}

type consumerStream struct {
	consumer    broker.Consumer
	spec        loadgen.SubscriptionSpec
	maxInFlight int
	deliver     func(loadgen.Delivery)
	sub, stream int
	log         *slog.Logger

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func (c *consumerStream) run() {
	defer close(c.stopped)
	var msg pdsv1.PortfolioDistribution // reused: Unmarshal resets it
	handles := make([]broker.AckHandle, 0, c.maxInFlight)
	for {
		batch, err := c.consumer.Receive(c.ctx, c.maxInFlight)
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("engine: receive failed; stream stops", "subscription", c.sub, "stream", c.stream, "err", err)
			}
			return
		}
		now := time.Now()
		handles = handles[:0]
		for i := range batch {
			d := &batch[i]
			if c.matches(d, &msg) {
				seq, _ := loadgen.SeqFromEventID(d.EventID) // matches checked it
				c.deliver(loadgen.Delivery{Subscription: c.sub, Stream: c.stream, Seq: seq, ReceivedAt: now})
				if c.spec.ProcessingDelay > 0 {
					if !c.spec.Process(c.ctx) {
						return // closed before acknowledging: the engine redelivers it
					}
					c.ack(d.Handle)
					continue
				}
			}
			handles = append(handles, d.Handle)
		}
		c.ack(handles...)
	}
}

// matches decodes the record into msg and applies the subscription's spec; records that are not events
// of this run do not match.
func (c *consumerStream) matches(d *broker.Delivery, msg *pdsv1.PortfolioDistribution) bool {
	if _, err := loadgen.SeqFromEventID(d.EventID); err != nil {
		return false
	}
	msg.Reset()
	if err := msg.UnmarshalVT(d.Value); err != nil {
		c.log.Warn("engine: undecodable record", "event_id", d.EventID, "err", err)
		return false
	}
	ev := loadgen.Event{
		TargetWorkflows: msg.GetRouting().GetTargetWorkflows(),
		DataType:        msg.GetDataType(),
		Priority:        msg.GetRouting().GetPriority(),
	}
	return c.spec.Matches(&ev)
}

func (c *consumerStream) ack(handles ...broker.AckHandle) {
	if len(handles) == 0 {
		return
	}
	if err := c.consumer.Ack(c.ctx, handles...); err != nil && c.ctx.Err() == nil {
		c.log.Warn("engine: ack failed", "subscription", c.sub, "stream", c.stream, "err", err)
	}
}

// Close stops reading and detaches the consumer; its unacknowledged records go to the other streams.
func (c *consumerStream) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.stopped
		// ErrClosed: Cleanup stopped the engine first, which closed the consumer.
		if err := c.consumer.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
			c.closeErr = fmt.Errorf("engine: close stream %d of subscription %d: %w", c.stream, c.sub, err)
		}
	})
	return c.closeErr
}
