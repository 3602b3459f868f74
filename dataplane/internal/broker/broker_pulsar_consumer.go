package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

// Bounds of a partition consumer's receiver queue (records Pulsar pushes ahead of Receive). A record
// waiting there is not yet delivered: its ack deadline starts when Receive hands it out.
const (
	minReceiverQueue = 10
	maxReceiverQueue = 1000
)

// receiverQueueSize spreads about MaxUnacked records of prefetch over the partitions, so one consumer
// does not hold back from the subscription's other consumers many more records than it may deliver.
func receiverQueueSize(maxUnacked, partitions int) int {
	return min(max(maxUnacked/max(partitions, 1), minReceiverQueue), maxReceiverQueue)
}

// pulsarTokens numbers delivered records in this process; a token is unique per subscription because it
// is unique per process.
var pulsarTokens atomic.Uint64

// Subscribe attaches a Key_Shared consumer to the subscription. A subscription missing at Pulsar is
// created through the admin API first, at the earliest record or at StartTime.
func (b *PulsarBroker) Subscribe(ctx context.Context, sub SubscriptionRef, opts ConsumerOptions) (Consumer, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = defaultAckDeadline
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = defaultMaxUnacked
	}
	names := b.topicNames(sub.Topic)
	name := subscriptionName(sub)
	if err := b.ensureSubscription(ctx, names, name, sub.StartTime); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	c := &pulsarConsumer{
		broker:       b,
		topic:        names.topic,
		subscription: name,
		options: pulsar.ConsumerOptions{
			SubscriptionName:               name,
			Type:                           pulsar.KeyShared,
			SubscriptionInitialPosition:    pulsar.SubscriptionPositionEarliest,
			ReceiverQueueSize:              receiverQueueSize(opts.MaxUnacked, sub.Topic.Partitions),
			NackRedeliveryDelay:            b.opts.NackRedeliveryDelay,
			EnableBatchIndexAcknowledgment: true,
		},
		ackDeadline:   opts.AckDeadline,
		maxUnacked:    opts.MaxUnacked,
		messages:      make(chan pulsar.ConsumerMessage, maxReceiverQueue),
		partitions:    map[string]*partitionConsumer{},
		closedCh:      make(chan struct{}),
		capacityFreed: make(chan struct{}, 1),
		outstanding:   map[string]heldMessage{},
	}
	if err := c.attachPartitions(); err != nil {
		c.closePartitions()
		if b.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("subscribe %s to %s: %w", sub.ID, names.topic, err)
	}
	b.mu.Lock()
	if b.isClosed() {
		b.mu.Unlock()
		c.closePartitions()
		return nil, ErrClosed
	}
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	go c.discoverPartitions()
	go c.expireLoop()
	return c, nil
}

// ensureSubscription creates the durable subscription if Pulsar does not have it, positioned at the
// earliest record or at start. An existing subscription keeps its position.
func (b *PulsarBroker) ensureSubscription(ctx context.Context, names pulsarNames, name string, start time.Time) error {
	topic := mustTopicName(names.topic)
	var exists bool
	err := b.retryAdmin(ctx, "list subscriptions of "+names.topic, func(ctx context.Context) error {
		subs, err := b.admin.Subscriptions().ListWithContext(ctx, topic)
		exists = slices.Contains(subs, name)
		return err
	})
	if err != nil {
		return err
	}
	if exists {
		return nil
	}
	if err := b.createSubscription(ctx, topic, name, utils.Earliest); err != nil {
		return err
	}
	if start.IsZero() {
		return nil
	}
	return b.retryAdmin(ctx, "reset subscription "+name+" to its start time", func(ctx context.Context) error {
		return b.admin.Subscriptions().ResetCursorToTimestampWithContext(ctx, topic, name, start.UnixMilli())
	})
}

func (b *PulsarBroker) createSubscription(ctx context.Context, topic utils.TopicName, name string, at utils.MessageID) error {
	return b.retryAdmin(ctx, "create subscription "+name, func(ctx context.Context) error {
		err := b.admin.Subscriptions().CreateWithContext(ctx, topic, name, at)
		if isAdminStatus(err, http.StatusConflict) {
			return nil
		}
		return err
	})
}

// DeleteSubscription closes this process's consumers of the subscription and force-deletes it.
func (b *PulsarBroker) DeleteSubscription(ctx context.Context, sub SubscriptionRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	names := b.topicNames(sub.Topic)
	name := subscriptionName(sub)
	b.closeConsumers(func(c *pulsarConsumer) bool { return c.topic == names.topic && c.subscription == name })
	topic := mustTopicName(names.topic)
	err := b.retryAdmin(ctx, "delete subscription "+name, func(ctx context.Context) error {
		err := b.admin.Subscriptions().ForceDeleteWithContext(ctx, topic, name)
		if isAdminStatus(err, http.StatusNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete subscription %s: %w", sub.ID, err)
	}
	return nil
}

// Seek moves the subscription through the admin API, so it works with or without consumers attached
// (Pulsar disconnects attached consumers, which reconnect at the new position).
func (b *PulsarBroker) Seek(ctx context.Context, sub SubscriptionRef, pos SeekPosition) error {
	if err := pos.validate(); err != nil {
		return fmt.Errorf("seek %s: %w", sub.ID, err)
	}
	if b.isClosed() {
		return ErrClosed
	}
	names := b.topicNames(sub.Topic)
	name := subscriptionName(sub)
	topic := mustTopicName(names.topic)
	var exists bool
	err := b.retryAdmin(ctx, "list subscriptions of "+names.topic, func(ctx context.Context) error {
		subs, err := b.admin.Subscriptions().ListWithContext(ctx, topic)
		exists = slices.Contains(subs, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("seek %s: %w", sub.ID, err)
	}
	if !exists {
		at := utils.Earliest
		if pos.Latest {
			at = utils.Latest
		}
		if err := b.createSubscription(ctx, topic, name, at); err != nil {
			return fmt.Errorf("seek %s: %w", sub.ID, err)
		}
	}
	var op func(ctx context.Context) error
	switch {
	case pos.Latest:
		op = func(ctx context.Context) error {
			return b.admin.Subscriptions().ClearBacklogWithContext(ctx, topic, name)
		}
	case pos.Earliest:
		op = func(ctx context.Context) error {
			return b.admin.Subscriptions().ResetCursorToTimestampWithContext(ctx, topic, name, 0)
		}
	default:
		op = func(ctx context.Context) error {
			return b.admin.Subscriptions().ResetCursorToTimestampWithContext(ctx, topic, name, pos.Time.UnixMilli())
		}
	}
	if err := b.retryAdmin(ctx, "seek subscription "+name, op); err != nil {
		return fmt.Errorf("seek %s: %w", sub.ID, err)
	}
	return nil
}

// pulsarConsumer hands out records within MaxUnacked and enforces the ack deadline itself (the Go client
// has no ack timeout): a record unacknowledged past it is nacked, which makes Pulsar deliver it again,
// to this or another consumer of the subscription, with its redelivery count raised.
//
// It holds one Pulsar consumer per partition, all feeding one channel, and attaches new partitions
// itself: the client's own partitioned consumer replaces its partition list on growth while AckID reads
// it without a lock (a data race in pulsar-client-go v0.19.0).
type pulsarConsumer struct {
	broker       *PulsarBroker
	topic        string
	subscription string
	options      pulsar.ConsumerOptions // template for each partition's consumer
	ackDeadline  time.Duration
	maxUnacked   int
	messages     chan pulsar.ConsumerMessage
	closedCh     chan struct{}
	closeOnce    sync.Once
	gone         atomic.Bool // closed because its topic or subscription was deleted
	// capacityFreed wakes a Receive blocked on MaxUnacked.
	capacityFreed chan struct{}

	partMu     sync.Mutex
	partClosed bool
	partitions map[string]*partitionConsumer // by partition topic

	mu          sync.Mutex
	outstanding map[string]heldMessage // handed out, not acked or nacked, by token
	deadlines   []tokenDeadline        // in delivery order, so in deadline order
}

type heldMessage struct {
	consumer pulsar.Consumer
	id       pulsar.MessageID
}

type tokenDeadline struct {
	token string
	at    time.Time
}

var _ Consumer = (*pulsarConsumer)(nil)

// partitionConsumer is the Pulsar consumer of one partition. Pulsar may hand it messages before
// Subscribe returns; they wait for ready, since acking through a consumer still being built races with
// its construction.
type partitionConsumer struct {
	ready chan struct{} // closed once pc is set or the subscription failed (pc nil)
	pc    pulsar.Consumer
}

// attachPartitions subscribes to every partition of the topic not attached yet. Only Subscribe and then
// discoverPartitions call it, one after the other.
func (c *pulsarConsumer) attachPartitions() error {
	partitionTopics, err := c.broker.client.TopicPartitions(c.topic)
	if err != nil {
		return fmt.Errorf("look up partitions: %w", err)
	}
	for _, pt := range partitionTopics {
		c.partMu.Lock()
		if c.partClosed {
			c.partMu.Unlock()
			return ErrClosed
		}
		if _, ok := c.partitions[pt]; ok {
			c.partMu.Unlock()
			continue
		}
		entry := &partitionConsumer{ready: make(chan struct{})}
		c.partitions[pt] = entry
		c.partMu.Unlock()

		opts := c.options
		opts.Topic = pt
		opts.MessageChannel = c.messages
		entry.pc, err = c.broker.client.Subscribe(opts)
		close(entry.ready)
		if err != nil {
			c.partMu.Lock()
			if c.partitions[pt] == entry {
				delete(c.partitions, pt)
			}
			c.partMu.Unlock()
			return fmt.Errorf("subscribe to %s: %w", pt, err)
		}
	}
	return nil
}

// consumerOf returns the attached consumer of a partition topic, waiting while it is being attached; nil
// when the partition is not (or no longer) attached.
func (c *pulsarConsumer) consumerOf(partitionTopic string) pulsar.Consumer {
	c.partMu.Lock()
	entry, ok := c.partitions[partitionTopic]
	c.partMu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-entry.ready:
		return entry.pc
	case <-c.closedCh:
		return nil
	}
}

// discoverPartitions attaches partitions added to the topic, by this or another node.
func (c *pulsarConsumer) discoverPartitions() {
	tick := time.NewTicker(c.broker.opts.PartitionsDiscovery)
	defer tick.Stop()
	for {
		select {
		case <-c.closedCh:
			return
		case <-tick.C:
			if err := c.attachPartitions(); err != nil && !errors.Is(err, ErrClosed) {
				c.broker.log.Warn("attaching new partitions failed, retrying", "topic", c.topic, "subscription", c.subscription, "err", err)
			}
		}
	}
}

func (c *pulsarConsumer) closePartitions() {
	c.partMu.Lock()
	c.partClosed = true
	partitions := c.partitions
	c.partitions = map[string]*partitionConsumer{}
	c.partMu.Unlock()
	var wg sync.WaitGroup
	for _, entry := range partitions {
		wg.Go(func() {
			<-entry.ready
			if entry.pc != nil {
				entry.pc.Close()
			}
		})
	}
	wg.Wait()
}

// partitionOf returns N of a partition topic named …-partition-N.
func partitionOf(topic string) int {
	i := strings.LastIndex(topic, partitionSuffix)
	if i < 0 {
		return 0
	}
	n, err := strconv.Atoi(topic[i+len(partitionSuffix):])
	if err != nil {
		return 0
	}
	return n
}

const partitionSuffix = "-partition-"

func (c *pulsarConsumer) closedErr() error {
	if c.gone.Load() {
		return ErrSubscriptionGone
	}
	return ErrClosed
}

func (c *pulsarConsumer) Receive(ctx context.Context, limit int) ([]Delivery, error) {
	limit = max(limit, 1)
	for {
		c.mu.Lock()
		capacity := c.maxUnacked - len(c.outstanding)
		c.mu.Unlock()
		if capacity <= 0 {
			select {
			case <-c.capacityFreed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-c.closedCh:
				return nil, c.closedErr()
			}
		}
		n := min(limit, capacity)
		var first pulsar.ConsumerMessage
		select {
		case first = <-c.messages:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closedCh:
			return nil, c.closedErr()
		}
		msgs := []pulsar.ConsumerMessage{first}
	drain:
		for len(msgs) < n {
			select {
			case m := <-c.messages:
				msgs = append(msgs, m)
			default:
				break drain
			}
		}
		return c.deliver(msgs)
	}
}

func (c *pulsarConsumer) deliver(msgs []pulsar.ConsumerMessage) ([]Delivery, error) {
	consumers := make([]pulsar.Consumer, len(msgs))
	for i, m := range msgs {
		if consumers[i] = c.consumerOf(m.Topic()); consumers[i] == nil {
			// Closed meanwhile: Pulsar delivers the records again to other consumers.
			return nil, c.closedErr()
		}
	}
	out := make([]Delivery, len(msgs))
	deadline := time.Now().Add(c.ackDeadline)
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closedCh:
		// Closed while receiving: Pulsar redelivers these to other consumers.
		return nil, c.closedErr()
	default:
	}
	for i, m := range msgs {
		token := strconv.FormatUint(pulsarTokens.Add(1), 36)
		props := m.Properties()
		out[i] = Delivery{
			Record: Record{
				Partition:  partitionOf(m.Topic()),
				Key:        m.Key(),
				EventID:    props[PropertyEventID],
				Value:      m.Payload(),
				Properties: props,
			},
			Handle:      AckHandle{Token: token},
			Attempt:     int(m.RedeliveryCount()) + 1,
			PublishTime: m.PublishTime(),
		}
		c.outstanding[token] = heldMessage{consumer: consumers[i], id: m.ID()}
		c.deadlines = append(c.deadlines, tokenDeadline{token: token, at: deadline})
	}
	return out, nil
}

func (c *pulsarConsumer) take(handles []AckHandle) []heldMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := make([]heldMessage, 0, len(handles))
	for _, h := range handles {
		if m, ok := c.outstanding[h.Token]; ok {
			delete(c.outstanding, h.Token)
			held = append(held, m)
		}
	}
	return held
}

func (c *pulsarConsumer) freed() {
	select {
	case c.capacityFreed <- struct{}{}:
	default:
	}
}

// Ack acknowledges records individually (batch index acks, so one record of a batch is never delivered
// again while its neighbours are). Unknown and repeated handles are ignored.
func (c *pulsarConsumer) Ack(_ context.Context, handles ...AckHandle) error {
	ids := c.take(handles)
	if len(ids) == 0 {
		return nil
	}
	c.freed()
	for _, m := range ids {
		if err := m.consumer.AckID(m.id); err != nil {
			select {
			case <-c.closedCh:
				return c.closedErr()
			default:
			}
			return fmt.Errorf("ack on %s: %w", c.subscription, err)
		}
	}
	return nil
}

// Nack returns records to Pulsar, which delivers them again after NackRedeliveryDelay.
func (c *pulsarConsumer) Nack(_ context.Context, handles ...AckHandle) error {
	ids := c.take(handles)
	if len(ids) == 0 {
		return nil
	}
	c.freed()
	for _, m := range ids {
		m.consumer.NackID(m.id)
	}
	return nil
}

// expireLoop nacks records whose ack deadline passed.
func (c *pulsarConsumer) expireLoop() {
	tick := time.NewTicker(min(max(c.ackDeadline/20, 10*time.Millisecond), 500*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.closedCh:
			return
		case now := <-tick.C:
			var expired []heldMessage
			c.mu.Lock()
			i := 0
			for ; i < len(c.deadlines) && !c.deadlines[i].at.After(now); i++ {
				token := c.deadlines[i].token
				if m, ok := c.outstanding[token]; ok {
					delete(c.outstanding, token)
					expired = append(expired, m)
				}
			}
			c.deadlines = c.deadlines[i:]
			// Acknowledged records leave their deadline behind until it passes; drop them early when they
			// outnumber the live ones, so memory follows MaxUnacked rather than throughput.
			if len(c.deadlines) > 2*len(c.outstanding)+1024 {
				c.deadlines = slices.DeleteFunc(c.deadlines, func(d tokenDeadline) bool {
					_, live := c.outstanding[d.token]
					return !live
				})
			}
			c.mu.Unlock()
			if len(expired) > 0 {
				c.freed()
				for _, m := range expired {
					m.consumer.NackID(m.id)
				}
			}
		}
	}
}

// Close closes the Pulsar consumer: Pulsar delivers its unacknowledged records to the subscription's
// other consumers at once. Pulsar does not count a record released by a closing consumer as redelivered,
// so records handed out and not acknowledged are nacked first (Pulsar raises their redelivery count, and
// their next delivery says Attempt 2 or more). The client sends nacks about NackRedeliveryDelay later, so
// the Pulsar consumers are then closed in the background; the broker's Close waits for that.
func (c *pulsarConsumer) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		close(c.closedCh)
		held := c.outstanding
		c.outstanding = map[string]heldMessage{}
		c.deadlines = nil
		c.mu.Unlock()
		finish := func() {
			c.closePartitions()
			c.broker.mu.Lock()
			delete(c.broker.consumers, c)
			c.broker.mu.Unlock()
		}
		if len(held) == 0 || c.gone.Load() || !c.broker.startClosing() {
			finish()
			return
		}
		for _, m := range held {
			m.consumer.NackID(m.id)
		}
		go func() {
			defer c.broker.closing.Done()
			// The client sends nacks from a ticker of a third of the delay; nothing reports when it did.
			t := time.NewTimer(c.broker.opts.NackRedeliveryDelay*4/3 + nackFlushMargin)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.broker.closed:
			}
			finish()
		}()
	})
	return nil
}

// nackFlushMargin is added to the nack tracker's schedule when Close waits for its nacks to be sent.
const nackFlushMargin = 50 * time.Millisecond

// closeGone closes the consumer because its subscription or topic is being deleted.
func (c *pulsarConsumer) closeGone() {
	c.gone.Store(true)
	_ = c.Close()
}
