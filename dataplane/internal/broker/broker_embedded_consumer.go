package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of ConsumerOptions, applied when a field is zero.
const (
	defaultAckDeadline = 30 * time.Second
	defaultMaxUnacked  = 1000
)

// pullExpiry is how long one pull request waits at the engine for messages before it is renewed. It also
// bounds how long a closed consumer keeps watching for messages already on their way to it.
const pullExpiry = time.Second

// maxPullBatch caps the engine messages asked for in one pull request (each holds up to BatchRecords).
const maxPullBatch = 256

// pullBytesSlack covers what the engine counts in a message's size besides the frame (subject, reply
// subject, headers).
const pullBytesSlack = 4 << 10

// oversizedPullBytes lets one pull request bring the largest message the engine accepts. A request asks for
// it only after the engine refused to send a message to a smaller one.
const oversizedPullBytes = embeddedMaxPayload + pullBytesSlack

// ErrSubscriptionGone is returned by Receive when the subscription or its topic was deleted at the broker
// while the consumer was attached.
var ErrSubscriptionGone = errors.New("subscription deleted at the broker")

// Subscribe attaches a consumer to the subscription's durable JetStream pull consumer, creating it if
// missing. The engine's MaxAckPending counts messages (batches) for all consumers of the subscription
// together: it is set to twice MaxUnacked (at least 256) as a safety bound, while each consumer enforces
// MaxUnacked records itself.
func (b *EmbeddedBroker) Subscribe(ctx context.Context, sub SubscriptionRef, opts ConsumerOptions) (Consumer, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = defaultAckDeadline
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = defaultMaxUnacked
	}
	names := topicNames(sub.Topic)
	durable := consumerName(sub)
	key := names.stream + "/" + durable
	// A seek replaces the engine consumer: creating or updating it meanwhile would race with that, and a
	// consumer registered during a seek would pull from the one being replaced.
	changing, err := b.beginConsumerChange(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	defer b.endConsumerChange(key, changing)
	if err := b.ensureConsumer(ctx, sub, names, durable, opts); err != nil {
		return nil, err
	}
	c := &embeddedConsumer{
		broker:        b,
		key:           key,
		pullSubject:   "$JS.API.CONSUMER.MSG.NEXT." + names.stream + "." + durable,
		inbox:         b.subConn.NewInbox(),
		acks:          b.ackRegistry(key),
		ackDeadline:   opts.AckDeadline,
		maxUnacked:    opts.MaxUnacked,
		incoming:      make(chan *nats.Msg, 4*maxPullBatch),
		closedCh:      make(chan struct{}),
		capacityFreed: make(chan struct{}, 1),
		seeked:        make(chan struct{}, 1),
		batches:       map[uint64]*fetchedBatch{},
		outstanding:   map[string]heldRecord{},
		recordsPerMsg: 1,
		workflow:      sub.Workflow,
		routedPrefix:  names.subjectPrefix + ".w.",
	}
	if sub.Workflow != "" {
		c.ownSubject = names.workflowSubject(sub.Workflow)
	}
	// One subscription per inbox (a seek replaces both): unsubscribing it in Close reaches the engine
	// before the Naks that follow on the same connection, so released records never go to a dead pull
	// request.
	c.natsSub, err = b.subConn.ChanSubscribe(c.inbox+".*", c.incoming)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	b.mu.Lock()
	if b.isClosed() {
		b.mu.Unlock()
		_ = c.natsSub.Unsubscribe()
		return nil, ErrClosed
	}
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	return c, nil
}

// ensureConsumer creates the subscription's durable consumer or brings its settings up to date. Its
// filter follows sub.Workflow (engineNames.consumerFilter). Changing the filter of an existing consumer
// keeps its position and its pending records, which are still redelivered whatever their subject; stored
// records behind its position that the old filter left out and the new one takes are not delivered, as if
// the subscription had always had the new workflow from that position on.
func (b *EmbeddedBroker) ensureConsumer(ctx context.Context, sub SubscriptionRef, names engineNames, durable string, opts ConsumerOptions) error {
	stream := names.stream
	maxAckPending := max(2*opts.MaxUnacked, 256)
	cfg := jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "PDS subscription " + sub.ID,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        opts.AckDeadline,
		MaxAckPending:  maxAckPending,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: names.consumerFilter(sub.Workflow),
		MemoryStorage:  true,
	}
	key := stream + "/" + durable
	if resume, ok := b.savedResume(ctx, sub, key); ok {
		// The engine lost the consumer in a restart: it resumes where it was last saved.
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = resume
	} else if !sub.StartTime.IsZero() {
		start := sub.StartTime.UTC()
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	for range 3 {
		cons, err := b.js.Consumer(ctx, stream, durable)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("subscribe %s: topic %s not ensured at the broker: %w", sub.ID, sub.Topic.ID, err)
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			_, err = b.js.CreateConsumer(ctx, stream, cfg)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // created concurrently with other settings: adopt it below
			}
			if err != nil {
				return fmt.Errorf("subscribe %s: create consumer: %w", sub.ID, err)
			}
			if err := b.recordPosition(ctx, key); err != nil {
				return fmt.Errorf("subscribe %s: %w", sub.ID, err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("subscribe %s: %w", sub.ID, err)
		}
		if !cons.CachedInfo().Config.MemoryStorage && !b.attached(key) {
			return b.moveStateToMemory(ctx, sub, key, cons.CachedInfo(), cfg)
		}
		current := cons.CachedInfo().Config
		if current.AckWait == cfg.AckWait && current.MaxAckPending == cfg.MaxAckPending && sameFilter(current, cfg.FilterSubjects) {
			return nil
		}
		current.AckWait = cfg.AckWait
		current.MaxAckPending = cfg.MaxAckPending
		current.FilterSubject = ""
		current.FilterSubjects = cfg.FilterSubjects
		if _, err := b.js.UpdateConsumer(ctx, stream, current); err != nil {
			return fmt.Errorf("subscribe %s: update consumer: %w", sub.ID, err)
		}
		return nil
	}
	return fmt.Errorf("subscribe %s: consumer kept changing concurrently", sub.ID)
}

// savedResume is the saved position of the consumer of key, unless the topic's stream does not reach it:
// then the position belongs to another life of the stream (a data directory restored from an older
// backup than the positions file), and resuming there would skip records stored since, so the subscription
// starts over from its start time instead (at least once).
func (b *EmbeddedBroker) savedResume(ctx context.Context, sub SubscriptionRef, key string) (uint64, bool) {
	resume, ok := b.positions.get(key)
	if !ok {
		return 0, false
	}
	stream, _, _ := strings.Cut(key, "/")
	info, err := b.js.Stream(ctx, stream)
	if err != nil {
		return resume, true // creating the consumer reports what is wrong with the stream
	}
	if last := info.CachedInfo().State.LastSeq; resume > last+1 {
		b.log.Warn("embedded broker: saved subscription position lies beyond the topic's records; delivering from the subscription's start",
			"subscription", sub.ID, "resume_seq", resume, "last_seq", last)
		return 0, false
	}
	return resume, true
}

// moveStateToMemory replaces a consumer created by an earlier version, which keeps its state in files,
// with one that keeps it in memory, resuming after the old one's acknowledgement floor: its records
// delivered and not yet acknowledged come again, as they would on reconnecting, and so may records
// acknowledged above the floor. The position is saved before the old consumer goes.
func (b *EmbeddedBroker) moveStateToMemory(ctx context.Context, sub SubscriptionRef, key string, old *jetstream.ConsumerInfo, cfg jetstream.ConsumerConfig) error {
	resume := old.AckFloor.Stream + 1
	b.positions.set(key, resume)
	if err := b.positions.save(); err != nil {
		return fmt.Errorf("subscribe %s: %w", sub.ID, err)
	}
	cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	cfg.OptStartSeq = resume
	cfg.OptStartTime = nil
	if err := b.js.DeleteConsumer(ctx, old.Stream, old.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("subscribe %s: replace the consumer of an earlier version: %w", sub.ID, err)
	}
	if err := b.createConsumerAfterDelete(ctx, old.Stream, cfg); err != nil {
		return fmt.Errorf("subscribe %s: replace the consumer of an earlier version: %w", sub.ID, err)
	}
	b.ackRegistry(key).reset()
	b.log.Info("embedded broker: subscription state moved to memory", "subscription", sub.ID, "resume_seq", resume)
	return nil
}

// attached reports whether a consumer of this process reads the engine consumer of key.
func (b *EmbeddedBroker) attached(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.consumers {
		if c.key == key {
			return true
		}
	}
	return false
}

// sameFilter reports whether the consumer cfg already reads exactly the subjects filter names.
func sameFilter(cfg jetstream.ConsumerConfig, filter []string) bool {
	current := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		current = []string{cfg.FilterSubject}
	}
	return slices.Equal(current, filter)
}

func (b *EmbeddedBroker) ackRegistry(key string) *ackRegistry {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.acks[key]
	if !ok {
		r = &ackRegistry{batches: map[uint64]*ackState{}}
		b.acks[key] = r
	}
	return r
}

// ackRegistry remembers, per subscription and process, which records of partly acknowledged engine
// messages were acknowledged, so a redelivered message skips them. Entries go when the message is acked.
type ackRegistry struct {
	mu      sync.Mutex
	batches map[uint64]*ackState // by stream sequence
}

type ackState struct {
	acked     []bool
	remaining int
}

// unacked lists the positions in frame.records of the records of message seq not yet acknowledged.
func (r *ackRegistry) unacked(seq uint64, frame *decodedFrame) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, 0, len(frame.records))
	st := r.batches[seq]
	for i := range frame.records {
		if index := frame.frameIndex(i); st == nil || index >= len(st.acked) || !st.acked[index] {
			out = append(out, i)
		}
	}
	return out
}

func (r *ackRegistry) isAcked(seq uint64, index int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.batches[seq]
	return st != nil && index < len(st.acked) && st.acked[index]
}

// markAcked records the ack of the record at index of message seq and reports whether every record the
// consumer takes from the message (selected of its total) is now acknowledged.
func (r *ackRegistry) markAcked(seq uint64, index int, counts frameCounts) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.batches[seq]
	if st == nil {
		st = &ackState{acked: make([]bool, counts.total), remaining: counts.selected}
		r.batches[seq] = st
	}
	if index < len(st.acked) && !st.acked[index] {
		st.acked[index] = true
		st.remaining--
	}
	return st.remaining <= 0
}

func (r *ackRegistry) forget(seq uint64) {
	r.mu.Lock()
	delete(r.batches, seq)
	r.mu.Unlock()
}

// fetchedBatch is one delivery of an engine message to this consumer.
type fetchedBatch struct {
	msg         *nats.Msg
	seq         uint64
	attempt     int
	publishTime time.Time
	frame       decodedFrame
	// extendedAt is when the engine's ack timer for this delivery last (re)started.
	extendedAt time.Time
	// released: acked, Nak'd or replaced by a newer delivery; its buffered records are dropped.
	released bool
}

// heldRecord is a record handed out by Receive and not yet acked or nacked.
type heldRecord struct {
	counts frameCounts // of its engine message
	since  time.Time
}

// frameCounts are the records of an engine message and how many of them the consumer takes.
type frameCounts struct {
	total, selected int
}

func (d *decodedFrame) counts() frameCounts {
	return frameCounts{total: d.total, selected: len(d.records)}
}

// pullRequest is the consumer's open request for messages at the engine.
type pullRequest struct {
	seq       uint64 // its inbox is inbox.<seq>
	open      bool
	remaining int       // messages it may still bring
	deadline  time.Time // past this it is treated as ended even if its timeout status got lost
}

type bufferedRecord struct {
	batch *fetchedBatch
	index int // in batch.frame.records
}

// embeddedConsumer pulls batches with its own pull requests (one open at a time) and hands their records
// out within MaxUnacked.
type embeddedConsumer struct {
	broker *EmbeddedBroker
	// key names the subscription in the broker's registries (stream/consumer).
	key         string
	pullSubject string
	inbox       string
	acks        *ackRegistry
	ackDeadline time.Duration
	maxUnacked  int
	natsSub     *nats.Subscription
	incoming    chan *nats.Msg
	closedCh    chan struct{}
	// capacityFreed wakes a Receive blocked on MaxUnacked.
	capacityFreed chan struct{}
	// seeked wakes a Receive waiting on a pull request that a seek made obsolete.
	seeked chan struct{}

	mu     sync.Mutex
	closed bool
	// seekDone, while set, is closed when a seek of the subscription has finished; no pull before that.
	seekDone <-chan struct{}
	request  pullRequest // the newest pull request
	// nextOversized makes the next pull request ask for up to the engine's largest message: the engine
	// ended the last one because its next message did not fit.
	nextOversized bool
	buffer        []bufferedRecord
	batches       map[uint64]*fetchedBatch // newest delivery held, by stream sequence
	outstanding   map[string]heldRecord    // handed out, not acked or nacked, by token
	recordsPerMsg float64                  // moving average of records taken, to size pull requests
	// workflow is the subscription's: the consumer takes the records targeting it or no workflow.
	workflow string
	// routedPrefix starts every workflow subject of the topic; ownSubject is the consumer's workflow's, empty
	// when its Workflow is. See selectorFor.
	routedPrefix string
	ownSubject   string
}

// selectorFor says which records of a message stored under subject the consumer takes, whatever filter its
// engine consumer has (a Seek by a caller that did not name the workflow widens it to every subject). The
// topic subject holds every workflow's records: it takes those for its workflow. A workflow subject (frame
// version 2) holds copies of one workflow's records: with a Workflow it skips other workflows' subjects,
// whose records for it are also under its own; without one, it skips the copies, to read each record once.
func (c *embeddedConsumer) selectorFor(subject string) (sel recordSelector, skipAll bool) {
	if !strings.HasPrefix(subject, c.routedPrefix) {
		return recordSelector{workflow: c.workflow}, false
	}
	if c.ownSubject == "" {
		return recordSelector{skipCopies: true}, false
	}
	return recordSelector{}, subject != c.ownSubject
}

var _ Consumer = (*embeddedConsumer)(nil)

func (c *embeddedConsumer) Receive(ctx context.Context, limit int) ([]Delivery, error) {
	limit = max(limit, 1)
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		free := c.maxUnacked - len(c.outstanding)
		if free > 0 && len(c.buffer) > 0 {
			if out := c.handOutLocked(min(limit, free)); len(out) > 0 {
				c.mu.Unlock()
				return out, nil
			}
		}
		fetchSize := 0
		if free > 0 {
			fetchSize = int(float64(free)/c.recordsPerMsg + 0.999)
			fetchSize = min(max(fetchSize, 1), maxPullBatch)
		}
		c.mu.Unlock()

		if free <= 0 {
			select {
			case <-c.capacityFreed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-c.closedCh:
				return nil, ErrClosed
			}
		}
		if err := c.pull(ctx, fetchSize); err != nil {
			return nil, err
		}
	}
}

// pull waits for the next engine message on the open pull request, opening one when none is.
func (c *embeddedConsumer) pull(ctx context.Context, batch int) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if done := c.seekDone; done != nil {
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closedCh:
			return ErrClosed
		}
		c.mu.Lock()
		if c.seekDone == done {
			c.seekDone = nil
		}
		c.mu.Unlock()
		return nil
	}
	if !c.request.open || time.Now().After(c.request.deadline) {
		c.request = pullRequest{seq: c.request.seq + 1, open: true, remaining: batch, deadline: time.Now().Add(pullExpiry + time.Second)}
		req, _ := json.Marshal(struct {
			Batch    int           `json:"batch"`
			MaxBytes int           `json:"max_bytes"`
			Expires  time.Duration `json:"expires"`
		}{batch, c.pullBytes(c.nextOversized), pullExpiry})
		if err := c.broker.subConn.PublishRequest(c.pullSubject, c.requestInbox(c.request.seq), req); err != nil {
			c.request.open = false
			c.mu.Unlock()
			return fmt.Errorf("receive: pull request: %w", err)
		}
	}
	deadline := c.request.deadline
	c.mu.Unlock()

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case m := <-c.incoming:
		if err := c.handleIncoming(m); err != nil {
			return err
		}
		for {
			select {
			case m := <-c.incoming:
				if err := c.handleIncoming(m); err != nil {
					return err
				}
			default:
				return nil
			}
		}
	case <-timer.C:
		c.mu.Lock()
		c.request.open = false
		c.mu.Unlock()
		return nil
	case <-c.seeked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closedCh:
		return ErrClosed
	}
}

// pullBytes bounds the bytes one pull request may bring: room for a few full batches, so that what the
// engine has sent and this process not yet read stays small whatever the number of consumers (the engine
// cuts off a connection with more than its MaxPending waiting), and a message larger than that, which
// the engine will not send to such a request, comes with an oversized one.
func (c *embeddedConsumer) pullBytes(oversized bool) int {
	if oversized {
		return oversizedPullBytes
	}
	return 4*c.broker.opts.BatchBytes + pullBytesSlack
}

func (c *embeddedConsumer) requestInbox(seq uint64) string {
	return c.inbox + "." + strconv.FormatUint(seq, 10)
}

func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") != ""
}

func (c *embeddedConsumer) handleIncoming(m *nats.Msg) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Sub != c.natsSub {
		return nil // sent to an inbox a seek retired, by the engine consumer it replaced
	}
	current := m.Subject == c.requestInbox(c.request.seq)
	if isStatus(m) {
		status := m.Header.Get("Status")
		if !current || status == "100" {
			return nil // heartbeat, or the end of a request already given up on
		}
		c.request.open = false
		description := m.Header.Get("Description")
		// 503: nothing answers pull requests for this consumer any more (it or its stream is gone).
		if status == "503" || (status == "409" && strings.Contains(description, "Consumer Deleted")) {
			return ErrSubscriptionGone
		}
		if status == "409" && strings.Contains(description, "Exceeds MaxBytes") {
			c.nextOversized = true
		}
		return nil
	}
	// A delivery names its stream subject, not its request: any one ends the need for an oversized request.
	c.nextOversized = false
	// Deliveries carry their stream subject, not the request's inbox, so each counts against the newest
	// request; one left over from an abandoned request only makes the next request open a little early.
	c.request.remaining--
	if c.request.remaining <= 0 {
		c.request.open = false
	}
	c.acceptLocked(m)
	return nil
}

// acceptLocked buffers the not yet acknowledged records of a delivered engine message.
func (c *embeddedConsumer) acceptLocked(m *nats.Msg) {
	if c.closed {
		c.reply(m, ackNak)
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		c.broker.log.Error("embedded broker: delivery without metadata", "subject", m.Subject, "err", err)
		return
	}
	sel, skipAll := c.selectorFor(m.Subject)
	if skipAll {
		c.reply(m, ackAck)
		c.acks.forget(meta.Sequence.Stream)
		return
	}
	frame, err := decodeBatchFrame(m.Data, sel)
	if errors.Is(err, errNewerBatchFrame) {
		// An earlier build running on a later build's data: dropping the batch would lose its events.
		c.broker.log.Error("embedded broker: batch written by a later PDS version, left in place; run that version or a later one on this data directory",
			"stream_seq", meta.Sequence.Stream, "err", err)
		c.reply(m, ackNakLater)
		return
	}
	if err != nil {
		// Redelivering it would fail the same way forever.
		c.broker.log.Error("embedded broker: dropping undecodable batch", "stream_seq", meta.Sequence.Stream, "err", err)
		c.reply(m, ackTerm)
		return
	}
	seq := meta.Sequence.Stream
	// Counted as at least one per message, so a pull asks for no more messages than it has room for records.
	c.recordsPerMsg = 0.9*c.recordsPerMsg + 0.1*float64(max(len(frame.records), 1))
	pending := c.acks.unacked(seq, &frame)
	if len(pending) == 0 {
		c.reply(m, ackAck)
		c.acks.forget(seq)
		return
	}
	if old, ok := c.batches[seq]; ok {
		old.released = true
	}
	fb := &fetchedBatch{
		msg:         m,
		seq:         seq,
		attempt:     int(meta.NumDelivered),
		publishTime: meta.Timestamp.UTC(),
		frame:       frame,
		extendedAt:  time.Now(),
	}
	c.batches[seq] = fb
	for _, i := range pending {
		c.buffer = append(c.buffer, bufferedRecord{batch: fb, index: i})
	}
}

func (c *embeddedConsumer) handOutLocked(limit int) []Delivery {
	out := make([]Delivery, 0, min(limit, len(c.buffer)))
	used := 0
	now := time.Now()
	for used < len(c.buffer) && len(out) < limit {
		br := c.buffer[used]
		used++
		fb := br.batch
		index := fb.frame.frameIndex(br.index)
		if fb.released || c.acks.isAcked(fb.seq, index) {
			continue
		}
		token := ackToken(fb.seq, index)
		if held, ok := c.outstanding[token]; ok && now.Sub(held.since) < c.ackDeadline {
			// The message came back for another of its records (Nack): the subscriber still holds
			// this one within its deadline, so it is not a redelivery yet.
			continue
		}
		// Records that waited in the buffer get a full ack deadline from when they are handed out.
		if now.Sub(fb.extendedAt) > c.ackDeadline/4 {
			c.reply(fb.msg, ackInProgress)
			fb.extendedAt = now
		}
		c.outstanding[token] = heldRecord{counts: fb.frame.counts(), since: now}
		out = append(out, Delivery{
			Record:      fb.frame.records[br.index],
			Handle:      AckHandle{Token: token},
			Attempt:     fb.attempt,
			PublishTime: fb.publishTime,
		})
	}
	clear(c.buffer[:used])
	c.buffer = c.buffer[used:]
	if len(c.buffer) == 0 {
		c.buffer = nil
	}
	return out
}

func (c *embeddedConsumer) Ack(_ context.Context, handles ...AckHandle) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	for _, h := range handles {
		seq, index, ok := parseAckToken(h.Token)
		if !ok {
			continue
		}
		held, ok := c.outstanding[h.Token]
		if !ok {
			continue
		}
		delete(c.outstanding, h.Token)
		allAcked := c.acks.markAcked(seq, index, held.counts)
		fb, holding := c.batches[seq]
		if !holding {
			// Nak'd: the redelivery skips this record, or is acked at once when it finds all of them acked.
			continue
		}
		if allAcked {
			c.reply(fb.msg, ackAck)
			fb.released = true
			delete(c.batches, seq)
			c.acks.forget(seq)
		}
	}
	c.signalCapacity()
	return nil
}

func (c *embeddedConsumer) Nack(_ context.Context, handles ...AckHandle) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	for _, h := range handles {
		seq, _, ok := parseAckToken(h.Token)
		if !ok {
			continue
		}
		if _, held := c.outstanding[h.Token]; !held {
			continue
		}
		delete(c.outstanding, h.Token)
		if fb, held := c.batches[seq]; held {
			// The whole message comes back; its records acknowledged meanwhile are skipped then.
			c.reply(fb.msg, ackNak)
			fb.released = true
			delete(c.batches, seq)
		}
	}
	c.signalCapacity()
	return nil
}

func (c *embeddedConsumer) signalCapacity() {
	select {
	case c.capacityFreed <- struct{}{}:
	default:
	}
}

func (c *embeddedConsumer) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close stops pulling and Naks every message it holds, so their records go to other consumers now. Messages
// still on their way to its open pull request are Nak'd as they arrive by a reaper that runs until that
// request ends (at most pullExpiry); the broker's Close waits for it.
func (c *embeddedConsumer) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closedCh)
	pending := c.request
	release := make([]*nats.Msg, 0, len(c.batches))
	for seq, fb := range c.batches {
		release = append(release, fb.msg)
		delete(c.batches, seq)
	}
	c.buffer = nil
	clear(c.outstanding)
	c.mu.Unlock()

	b := c.broker
	err := b.nakConfirmed(release)
	reaped := make(chan struct{})
	b.mu.Lock()
	delete(b.consumers, c)
	b.reapers[reaped] = struct{}{}
	b.mu.Unlock()
	if pending.open {
		go c.reap(pending, reaped)
	} else {
		c.reap(pending, reaped)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("close consumer: %w", err)
	}
	return nil
}

// reap Naks messages that reach the closed consumer until its pull request ends, then unsubscribes. The
// engine may hand a message to the request at any moment until then, even while an UNSUB is on its way.
func (c *embeddedConsumer) reap(req pullRequest, done chan struct{}) {
	b := c.broker
	defer func() {
		b.mu.Lock()
		delete(b.reapers, done)
		b.mu.Unlock()
		close(done)
	}()
	subject := c.requestInbox(req.seq)
	timer := time.NewTimer(time.Until(req.deadline))
	defer timer.Stop()
	var late []*nats.Msg
	for remaining := req.remaining; req.open && remaining > 0; {
		select {
		case m := <-c.incoming:
			if m.Sub != c.natsSub {
				continue // from an engine consumer a seek replaced: nothing to release
			}
			if isStatus(m) {
				if m.Subject == subject && m.Header.Get("Status") != "100" {
					req.open = false
				}
				continue
			}
			late = append(late, m)
			remaining--
		case <-timer.C:
			req.open = false
		}
	}
	_ = c.natsSub.Unsubscribe()
	for {
		select {
		case m := <-c.incoming:
			if !isStatus(m) && m.Sub == c.natsSub {
				late = append(late, m)
			}
			continue
		default:
		}
		break
	}
	if err := b.nakConfirmed(late); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.log.Warn("embedded broker: releasing messages of a closed consumer", "err", err)
	}
}

// nakConfirmed Naks msgs and waits until the engine has processed every Nak, so a broker Close right
// after cannot leave them unapplied (the records would then wait out their ack deadline after reopen).
func (b *EmbeddedBroker) nakConfirmed(msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	inbox := b.subConn.NewInbox()
	confirmations := make(chan *nats.Msg, len(msgs))
	sub, err := b.subConn.ChanSubscribe(inbox, confirmations)
	if err != nil {
		return fmt.Errorf("release %d messages: %w", len(msgs), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, m := range msgs {
		if err := b.subConn.PublishRequest(m.Reply, inbox, ackNak); err != nil {
			return fmt.Errorf("release %d messages: %w", len(msgs), err)
		}
	}
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for range msgs {
		select {
		case <-confirmations:
		case <-timeout.C:
			return fmt.Errorf("release %d messages: engine did not confirm in time", len(msgs))
		}
	}
	return nil
}

// Acknowledgement bodies of the JetStream protocol.
var (
	ackAck = []byte("+ACK")
	// A Nak with a delay is stored by the engine (the record is due again after the delay, even across a
	// restart), unlike a plain Nak, which only queues the record in memory.
	ackNak = []byte("-NAK 1ms")
	// ackNakLater keeps a batch this build cannot read, without retrying it more than twice a minute.
	ackNakLater   = []byte("-NAK 30s")
	ackInProgress = []byte("+WIP")
	ackTerm       = []byte("+TERM")
)

// reply sends an acknowledgement on the consumer connection, behind this consumer's earlier requests.
func (c *embeddedConsumer) reply(m *nats.Msg, body []byte) {
	if err := c.broker.subConn.Publish(m.Reply, body); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.broker.log.Warn("embedded broker: acknowledgement not sent", "kind", string(body), "err", err)
		return
	}
	if string(body) == string(ackAck) || string(body) == string(ackTerm) { // the floor may move
		c.broker.positions.touch(c.key)
	}
}

func ackToken(seq uint64, index int) string {
	return strconv.FormatUint(seq, 10) + "-" + strconv.Itoa(index)
}

func parseAckToken(token string) (seq uint64, index int, ok bool) {
	s, i, found := strings.Cut(token, "-")
	if !found {
		return 0, 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	index, err = strconv.Atoi(i)
	if err != nil || index < 0 {
		return 0, 0, false
	}
	return seq, index, true
}
