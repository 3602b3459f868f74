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
			// Ack returns once Pulsar has recorded the acks. The client's default groups acks and sends
			// them up to 100ms later, and meanwhile drops incoming records whose ack is pending: an ack
			// sent after a Seek marked the replayed record consumed again, so the replay skipped it.
			AckWithResponse: true,
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
	go c.maintainPartitions()
	go c.expireLoop()
	return c, nil
}

// ensureSubscription creates the durable subscription on every partition that does not have it,
// positioned at the earliest record or at start. An existing subscription keeps its position.
//
// Each partition's subscription is created right at its start position, found by publish time, rather
// than created and then reset to the time: a reset disconnects the consumers already attached (another
// node attaches as soon as it finds the subscription on every partition), and pulsar-client-go v0.19.0 can
// miss the disconnect of a consumer it is just attaching (see checkAttached). A node attaches only once
// every partition has the subscription, so no consumer creates one at its own initial position.
func (b *PulsarBroker) ensureSubscription(ctx context.Context, names pulsarNames, name string, start time.Time) error {
	topic := mustTopicName(names.topic)
	var stats utils.PartitionedTopicStats
	err := b.retryAdmin(ctx, "read the subscriptions of "+names.topic, func(ctx context.Context) error {
		var err error
		stats, err = b.admin.Topics().GetPartitionedStatsWithContext(ctx, topic, true)
		return err
	})
	if err != nil {
		return err
	}
	partitionTopics, err := b.client.TopicPartitions(names.topic)
	if err != nil {
		return fmt.Errorf("look up the partitions of %s: %w", names.topic, err)
	}
	for _, pt := range partitionTopics {
		if _, ok := stats.Partitions[pt].Subscriptions[name]; ok {
			continue
		}
		partition := mustTopicName(pt)
		at := utils.Earliest
		if !start.IsZero() {
			err := b.retryAdmin(ctx, "find the first record of "+pt+" at or after "+start.UTC().Format(time.RFC3339Nano), func(ctx context.Context) error {
				var err error
				at, err = b.admin.Topics().GetMessageIDWithContext(ctx, partition, start.UnixMilli())
				return err
			})
			if err != nil {
				return err
			}
		}
		if err := b.createSubscription(ctx, partition, name, at); err != nil {
			return err
		}
	}
	return nil
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
	b.released.forget(names.topic + "\x00" + name)
	if err != nil {
		return fmt.Errorf("delete subscription %s: %w", sub.ID, err)
	}
	return nil
}

// Seek moves the subscription through the admin API, so it works with or without consumers attached
// (Pulsar disconnects attached consumers, which reconnect at the new position). Acks are synchronous
// (AckWithResponse), so every Ack that returned before Seek was recorded before the cursor moved.
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
	// Records handed out before the seek are either replayed (at or after the position) or counted as
	// acknowledged (before it): their handles become unknown, before the reset and again after it for
	// records handed out meanwhile, so a late ack cannot consume the replayed record at their position.
	b.dropHeld(names.topic, name)
	b.released.forget(names.topic + "\x00" + name)
	if err := b.retryAdmin(ctx, "seek subscription "+name, op); err != nil {
		return fmt.Errorf("seek %s: %w", sub.ID, err)
	}
	b.dropHeld(names.topic, name)
	return nil
}

// dropHeld forgets what this process's consumers of the subscription handed out and was not acknowledged.
func (b *PulsarBroker) dropHeld(topic, subscription string) {
	b.mu.Lock()
	var matched []*pulsarConsumer
	for c := range b.consumers {
		if c.topic == topic && c.subscription == subscription {
			matched = append(matched, c)
		}
	}
	b.mu.Unlock()
	for _, c := range matched {
		c.dropHeld()
	}
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
	consumer  pulsar.Consumer
	nacksSent *nackSentWatch // of consumer
	id        pulsar.MessageID
	topic     string // partition topic
	attempt   int
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
	ready     chan struct{} // closed once pc is set or the subscription failed (pc nil)
	pc        pulsar.Consumer
	nacksSent *nackSentWatch // the interceptor of pc
	// received counts the records handed out from pc; suspect counts the checks in a row that found pc
	// idle and lost or stuck (see checkAttached).
	received atomic.Int64
	suspect  int
}

// nackSentWatch is a consumer interceptor that tells when the client sent the redelivery request of
// nacked records. The client's nack tracker sends it from a timer about NackRedeliveryDelay after NackID,
// and reports it (OnNegativeAcksSend) right after queueing the request on the consumer's event loop, so
// a close request queued after that report follows it on the same connection, and Pulsar, which handles
// a connection's commands in order, has counted the redeliveries before it releases the rest.
type nackSentWatch struct {
	mu      sync.Mutex
	waiters map[entryPosition]chan struct{}
}

type entryPosition struct {
	ledger, entry int64
}

var _ pulsar.ConsumerInterceptor = (*nackSentWatch)(nil)

func positionOf(id pulsar.MessageID) entryPosition {
	return entryPosition{ledger: id.LedgerID(), entry: id.EntryID()}
}

// await returns a channel closed once the redelivery request of id's entry has been queued. Call it
// before NackID.
func (w *nackSentWatch) await(id pulsar.MessageID) <-chan struct{} {
	pos := positionOf(id)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiters == nil {
		w.waiters = map[entryPosition]chan struct{}{}
	}
	ch, ok := w.waiters[pos]
	if !ok {
		ch = make(chan struct{})
		w.waiters[pos] = ch
	}
	return ch
}

func (w *nackSentWatch) OnNegativeAcksSend(_ pulsar.Consumer, ids []pulsar.MessageID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		pos := positionOf(id)
		if ch, ok := w.waiters[pos]; ok {
			close(ch)
			delete(w.waiters, pos)
		}
	}
}

func (w *nackSentWatch) BeforeConsume(pulsar.ConsumerMessage)            {}
func (w *nackSentWatch) OnAcknowledge(pulsar.Consumer, pulsar.MessageID) {}

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
		entry := &partitionConsumer{ready: make(chan struct{}), nacksSent: &nackSentWatch{}}
		c.partitions[pt] = entry
		c.partMu.Unlock()

		opts := c.options
		opts.Topic = pt
		opts.MessageChannel = c.messages
		opts.Interceptors = pulsar.ConsumerInterceptors{entry.nacksSent}
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
func (c *pulsarConsumer) consumerOf(partitionTopic string) *partitionConsumer {
	c.partMu.Lock()
	entry, ok := c.partitions[partitionTopic]
	c.partMu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-entry.ready:
		if entry.pc == nil {
			return nil
		}
		return entry
	case <-c.closedCh:
		return nil
	}
}

// maintainPartitions attaches partitions added to the topic, by this or another node, and replaces the
// consumers Pulsar dropped without the client noticing (checkAttached).
func (c *pulsarConsumer) maintainPartitions() {
	discover := time.NewTicker(c.broker.opts.PartitionsDiscovery)
	defer discover.Stop()
	check := attachCheck{interval: firstAttachCheckInterval}
	checkTimer := time.NewTimer(check.interval)
	defer checkTimer.Stop()
	for {
		select {
		case <-c.closedCh:
			return
		case <-discover.C:
		case <-checkTimer.C:
			replaced := c.checkAttached(&check)
			checkTimer.Reset(check.interval)
			if !replaced {
				continue
			}
		}
		if err := c.attachPartitions(); err != nil && !errors.Is(err, ErrClosed) {
			c.broker.log.Warn("attaching partitions failed, retrying", "topic", c.topic, "subscription", c.subscription, "err", err)
		}
	}
}

// attachCheck paces checkAttached: from firstAttachCheckInterval after Subscribe, doubling up to
// maxAttachCheckInterval while every consumer is found attached, back to the start while one is not.
type attachCheck struct {
	interval time.Duration
	// lastReceived[partition topic] is the received count at the previous check.
	lastReceived map[string]int64
}

// firstAttachCheckInterval is short because the problems checkAttached repairs mostly follow a change
// of the subscription's consumers, such as this one subscribing: a partition left without its records
// is then found within a few seconds, not after a long wait the subscriber would notice.
const (
	firstAttachCheckInterval = time.Second
	maxAttachCheckInterval   = time.Minute
)

// suspectChecksBeforeReplace is how many checks in a row must find a partition's consumer idle and lost or
// stuck before it is replaced: one may catch it reconnecting, or records about to be dispatched.
const suspectChecksBeforeReplace = 2

// checkAttached replaces the partition consumers that wait for records Pulsar will not send them:
//   - lost: Pulsar no longer has the consumer while the client believes it attached. Pulsar closes a
//     subscription's consumers when its cursor is reset (a Seek); pulsar-client-go v0.19.0 drops a close
//     notice that arrives before it has registered a consumer it is just subscribing, and that consumer
//     then waits forever, its partition's records going to nobody in this process.
//   - stuck: the partition has a backlog while every consumer of the subscription there could take
//     records and holds none unacknowledged. Pulsar 4.0.8 can leave a Key_Shared partition so after a
//     consumer holding unacknowledged records disconnects (its records wait in the replay queue and are
//     never dispatched, apache/pulsar#23845); attaching again makes it read them.
//
// Both receive nothing, so only partitions idle since the last check are looked up, in the topic's stats
// (read once for the node's consumers of the topic checking at about the same time, topicStatsReads).
//
// It reports whether it replaced a consumer, to be attached again at once.
func (c *pulsarConsumer) checkAttached(check *attachCheck) (replaced bool) {
	c.partMu.Lock()
	idle := map[string]*partitionConsumer{}
	received := make(map[string]int64, len(c.partitions))
	for pt, entry := range c.partitions {
		select {
		case <-entry.ready:
		default:
			continue // being attached
		}
		if entry.pc == nil {
			continue
		}
		received[pt] = entry.received.Load()
		if prev, seen := check.lastReceived[pt]; seen && prev == received[pt] {
			idle[pt] = entry
		} else {
			entry.suspect = 0 // records flowed: earlier suspicions are void
		}
	}
	c.partMu.Unlock()
	check.lastReceived = received
	if len(idle) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultPulsarAdminRequestsTimeout)
	defer cancel()
	stats, err := c.broker.topicStats.get(ctx, c.topic)
	if err != nil {
		c.broker.log.Warn("checking that Pulsar still has this node's consumers failed, retrying", "topic", c.topic, "subscription", c.subscription, "err", err)
		return false
	}
	suspects := 0
	for pt, entry := range idle {
		problem := partitionProblem(stats, pt, c.subscription, entry.pc.Name())
		if problem == "" {
			entry.suspect = 0
			continue
		}
		suspects++
		if entry.suspect++; entry.suspect < suspectChecksBeforeReplace {
			continue
		}
		if c.detachPartition(pt, entry) {
			replaced = true
			c.broker.log.Warn("partition consumer gets no records from Pulsar; attaching it again",
				"topic", pt, "subscription", c.subscription, "consumer", entry.pc.Name(), "problem", problem)
		}
	}
	if suspects > 0 {
		check.interval = firstAttachCheckInterval
	} else {
		check.interval = min(2*check.interval, maxAttachCheckInterval)
	}
	return replaced
}

// partitionProblem says why, by the topic's stats, a partition consumer gets no records: "" when nothing
// is wrong, "lost" or "stuck" (see checkAttached).
func partitionProblem(stats utils.PartitionedTopicStats, partitionTopic, subscription, consumer string) string {
	partition, ok := stats.Partitions[partitionTopic]
	if !ok {
		return "" // not in the stats (a partition just added): nothing to conclude
	}
	sub := partition.Subscriptions[subscription]
	listed, allReady := false, true
	for _, cs := range sub.Consumers {
		listed = listed || cs.ConsumerName == consumer
		allReady = allReady && cs.AvailablePermits > 0 && cs.UnAckedMessages == 0
	}
	switch {
	case !listed:
		return "lost"
	case sub.MsgBacklog > 0 && allReady:
		return "stuck"
	}
	return ""
}

// detachPartition closes a partition's consumer and forgets it, so attachPartitions subscribes it again.
// Its records handed out and not acknowledged are delivered again by Pulsar, which no longer counts them
// as held; acking them through the closed consumer fails, and the caller is told so.
func (c *pulsarConsumer) detachPartition(partitionTopic string, entry *partitionConsumer) bool {
	c.partMu.Lock()
	if c.partClosed || c.partitions[partitionTopic] != entry {
		c.partMu.Unlock()
		return false
	}
	delete(c.partitions, partitionTopic)
	c.partMu.Unlock()
	entry.pc.Close()
	return true
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
		if out, err := c.deliver(msgs); err != nil || len(out) > 0 {
			return out, err
		}
	}
}

func (c *pulsarConsumer) deliver(msgs []pulsar.ConsumerMessage) ([]Delivery, error) {
	consumers := make([]*partitionConsumer, 0, len(msgs))
	kept := msgs[:0]
	for _, m := range msgs {
		entry := c.consumerOf(m.Topic())
		if entry == nil {
			select {
			case <-c.closedCh:
				// Closed meanwhile: Pulsar delivers the records again to other consumers.
				return nil, c.closedErr()
			default:
				// Its partition's consumer was replaced (checkAttached): Pulsar delivers it again.
				continue
			}
		}
		entry.received.Add(1)
		consumers = append(consumers, entry)
		kept = append(kept, m)
	}
	msgs = kept
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
			Attempt:     max(int(m.RedeliveryCount())+1, c.broker.released.take(c.subscriptionKey(), m.Topic(), m.ID())),
			PublishTime: m.PublishTime(),
		}
		c.outstanding[token] = heldMessage{consumer: consumers[i].pc, nacksSent: consumers[i].nacksSent, id: m.ID(), topic: m.Topic(), attempt: out[i].Attempt}
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
// again while its neighbours are) and returns once Pulsar recorded them: one round trip per partition
// consumer involved. Unknown and repeated handles are ignored, as are handles from before a Seek.
func (c *pulsarConsumer) Ack(_ context.Context, handles ...AckHandle) error {
	held := c.take(handles)
	if len(held) == 0 {
		return nil
	}
	c.freed()
	byConsumer := map[pulsar.Consumer][]pulsar.MessageID{}
	var order []pulsar.Consumer
	for _, m := range held {
		if _, ok := byConsumer[m.consumer]; !ok {
			order = append(order, m.consumer)
		}
		byConsumer[m.consumer] = append(byConsumer[m.consumer], m.id)
	}
	var errs []error
	for _, pc := range order {
		ids := byConsumer[pc]
		if err := pc.AckIDList(ids); err != nil {
			select {
			case <-c.closedCh:
				return c.closedErr()
			default:
			}
			// Pulsar still counts these records as held by this consumer: left so, they would come back
			// only when it closes, and under Key_Shared their keys would stay blocked for any consumer that
			// takes them over. Nacking makes Pulsar deliver them again, as the caller is told; a record
			// whose ack did land is not redelivered by a nack.
			for _, id := range ids {
				pc.NackID(id)
			}
			errs = append(errs, fmt.Errorf("ack %d records on %s: %w", len(ids), c.subscription, err))
		}
	}
	return errors.Join(errs...)
}

// dropHeld forgets the records handed out and not yet acknowledged: after a Seek their handles are
// stale, and acking one would mark the replayed record at its position consumed.
func (c *pulsarConsumer) dropHeld() {
	c.mu.Lock()
	c.outstanding = map[string]heldMessage{}
	c.deadlines = nil
	c.mu.Unlock()
	c.freed()
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
// the Pulsar consumers are closed in the background once the client reported every redelivery request
// queued (nackSentWatch): Pulsar handles them before the close. The broker's Close waits for that.
//
// Pulsar keeps redelivery counts only while the subscription has consumers: when its last consumer
// leaves, it forgets them. So the broker also remembers the next attempt of each released record
// (releasedAttempts), for when this process delivers it again, e.g. to a subscriber that reconnects.
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
		sent := make([]<-chan struct{}, 0, len(held))
		for _, m := range held {
			c.broker.released.remember(c.subscriptionKey(), m.topic, m.id, m.attempt+1)
			sent = append(sent, m.nacksSent.await(m.id))
			m.consumer.NackID(m.id)
		}
		go func() {
			defer c.broker.closing.Done()
			// A safety net only: the client sends nacks from a ticker of a third of the delay.
			t := time.NewTimer(c.broker.opts.NackRedeliveryDelay*4/3 + nackSendTimeout)
			defer t.Stop()
		wait:
			for _, ch := range sent {
				select {
				case <-ch:
				case <-t.C:
					c.broker.log.Warn("closing consumer before the client sent its nacks; released records may come back as first attempts",
						"topic", c.topic, "subscription", c.subscription)
					break wait
				case <-c.broker.closed:
					break wait
				}
			}
			finish()
		}()
	})
	return nil
}

// nackSendTimeout is added to the nack tracker's schedule to bound how long Close waits for the client to
// send its nacks; reaching it means the client stalled.
const nackSendTimeout = 10 * time.Second

// closeGone closes the consumer because its subscription or topic is being deleted.
func (c *pulsarConsumer) closeGone() {
	c.gone.Store(true)
	_ = c.Close()
}

func (c *pulsarConsumer) subscriptionKey() string { return c.topic + "\x00" + c.subscription }

// releasedAttempts remembers, per subscription, the attempt number the next delivery of a record released
// by a closed consumer must at least carry: Pulsar forgets redelivery counts when a subscription's last
// consumer leaves. An entry goes when the record is delivered again in this process, when the
// subscription is sought or deleted, or after releasedAttemptsTTL (the record went to another process or
// was acknowledged there).
type releasedAttempts struct {
	mu   sync.Mutex
	subs map[string]map[releasedID]releasedAttempt
}

type releasedID struct {
	topic                  string // partition topic
	ledger, entry, batchIx int64
}

type releasedAttempt struct {
	attempt int
	at      time.Time
}

const releasedAttemptsTTL = 10 * time.Minute

func releasedIDOf(topic string, id pulsar.MessageID) releasedID {
	return releasedID{topic: topic, ledger: id.LedgerID(), entry: id.EntryID(), batchIx: int64(id.BatchIdx())}
}

func (r *releasedAttempts) remember(sub, topic string, id pulsar.MessageID, attempt int) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.subs == nil {
		r.subs = map[string]map[releasedID]releasedAttempt{}
	}
	ids := r.subs[sub]
	if ids == nil {
		ids = map[releasedID]releasedAttempt{}
		r.subs[sub] = ids
	}
	for k, v := range ids {
		if now.Sub(v.at) > releasedAttemptsTTL {
			delete(ids, k)
		}
	}
	key := releasedIDOf(topic, id)
	if prev, ok := ids[key]; !ok || prev.attempt < attempt {
		ids[key] = releasedAttempt{attempt: attempt, at: now}
	}
}

// take returns the remembered attempt of a record delivered again (0 if none) and forgets it.
func (r *releasedAttempts) take(sub, topic string, id pulsar.MessageID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := r.subs[sub]
	if len(ids) == 0 {
		return 0
	}
	key := releasedIDOf(topic, id)
	v, ok := ids[key]
	if !ok {
		return 0
	}
	delete(ids, key)
	if len(ids) == 0 {
		delete(r.subs, sub)
	}
	if time.Since(v.at) > releasedAttemptsTTL {
		return 0
	}
	return v.attempt
}

// forget drops what is remembered for a subscription (sought or deleted).
func (r *releasedAttempts) forget(sub string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.subs, sub)
}
