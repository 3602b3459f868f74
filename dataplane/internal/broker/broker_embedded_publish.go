package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish adds each record to the open batch of every subject it is routed to (see topicWriter) and
// waits until the engine has acknowledged every batch holding one of them.
//
// Order: a consumer reads the stream in sequence order, and each subject's batches are written in the
// order they were filled, so records of one subject keep their publish order. A consumer with a Workflow
// reads two subjects that can hold records of one partition, the broadcast one and its workflow's, so when
// one call holds records of one partition for both, the call is written in segments, each waiting for the
// one before it to be stored. A consumer with an empty Workflow reads every subject: records of one
// partition that one call routes to different workflows may reach it in another order.
func (b *EmbeddedBroker) Publish(ctx context.Context, topic TopicRef, records []Record) error {
	if b.isClosed() {
		return ErrClosed
	}
	targeted := false
	for i := range records {
		r := &records[i]
		if r.Partition < 0 || r.Partition >= topic.Partitions {
			return fmt.Errorf("publish to topic %q: record %d: partition %d outside [0, %d)", topic.Name, i, r.Partition, topic.Partitions)
		}
		if size := encodedRecordSize(r) + batchFrameHeaderSize; size > embeddedMaxPayload {
			return fmt.Errorf("publish to topic %q: record %d: encoded size %d bytes exceeds the %d byte limit", topic.Name, i, size, embeddedMaxPayload)
		}
		targeted = targeted || len(r.TargetWorkflows) > 0
	}
	w := b.writer(topic)
	if targeted && !w.subjectsChecked.Load() {
		if err := b.ensureRoutedSubjects(ctx, topic, w); err != nil {
			return fmt.Errorf("publish to topic %q: %w", topic.Name, err)
		}
	}
	var waits []*publishBatch
	// kinds[p] says whether the current segment holds broadcast or targeted records of partition p.
	const (
		kindNone uint8 = iota
		kindBroadcast
		kindTargeted
	)
	var kinds []uint8
	if len(records) > 1 {
		kinds = make([]uint8, topic.Partitions)
	}
	var seenBuf [4]*topicBatcher
	for i := range records {
		r := &records[i]
		kind := kindBroadcast
		if len(r.TargetWorkflows) > 0 {
			kind = kindTargeted
		}
		if kinds != nil {
			if kinds[r.Partition] != kindNone && kinds[r.Partition] != kind {
				if err := b.awaitBatches(ctx, waits); err != nil {
					return fmt.Errorf("publish to topic %q: %w", topic.Name, err)
				}
				waits = waits[:0]
				clear(kinds)
			}
			kinds[r.Partition] = kind
		}
		if kind == kindBroadcast {
			batch, err := w.broadcast.add(r, 0)
			if err != nil {
				return fmt.Errorf("publish to topic %q: %w", topic.Name, err)
			}
			waits = appendBatch(waits, batch)
			continue
		}
		// One copy per distinct subject; workflows whose tokens collide share one.
		seen := seenBuf[:0]
		for _, workflow := range r.TargetWorkflows {
			batcher := w.forWorkflow(workflow)
			if slices.Contains(seen, batcher) {
				continue
			}
			var flags byte
			if len(seen) > 0 {
				flags = recordCopy
			}
			seen = append(seen, batcher)
			batch, err := batcher.add(r, flags)
			if err != nil {
				return fmt.Errorf("publish to topic %q: %w", topic.Name, err)
			}
			waits = appendBatch(waits, batch)
		}
	}
	if err := b.awaitBatches(ctx, waits); err != nil {
		return fmt.Errorf("publish to topic %q: %w", topic.Name, err)
	}
	return nil
}

// awaitBatches waits until every batch is stored; the first failure ends the wait.
func (b *EmbeddedBroker) awaitBatches(ctx context.Context, batches []*publishBatch) error {
	for _, batch := range batches {
		select {
		case <-batch.done:
			if batch.err != nil {
				return batch.err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closed:
			return ErrClosed
		}
	}
	return nil
}

// appendBatch adds batch unless it is already listed. Scanning from the end finds the common case, a run
// of records in one batch, at once; a call routed to many workflows scans a few batches per record.
func appendBatch(batches []*publishBatch, batch *publishBatch) []*publishBatch {
	for i := len(batches) - 1; i >= 0; i-- {
		if batches[i] == batch {
			return batches
		}
	}
	return append(batches, batch)
}

// topicWriter routes one topic's records to the batchers of its subjects (see engineNames): records with no
// target workflows to the broadcast subject, the others to the subject of each workflow they target. A
// record targeting several workflows is stored once per workflow, so each subscription reads exactly one
// copy of it: storage grows only for such records.
//
// Each subject has a batcher of its own, so one round of writes holds one engine message per subject
// that received records. With fsync after every write (EmbeddedOptions.SyncInterval 0) JetStream syncs
// once per message: a topic whose records target k workflows at once pays k fsyncs per round, which
// lengthens the rounds and so the publish latency. Measured on the 2-core VM with 4 KB messages: one
// round took 0.8 ms for 1 subject, 7.5 ms for 10, 46 ms for 100 (JetStream's atomic batch publish, which
// syncs once per batch, took 6.5-9 ms whatever k, as it stages each batch in a store of its own).
type topicWriter struct {
	broker    *EmbeddedBroker
	names     engineNames
	broadcast *topicBatcher
	// subjectsChecked: the stream is known to take workflow subjects (it may predate them).
	subjectsChecked atomic.Bool

	mu        sync.RWMutex
	workflows map[string]*topicBatcher // by workflow name
}

func (w *topicWriter) forWorkflow(workflow string) *topicBatcher {
	w.mu.RLock()
	batcher, ok := w.workflows[workflow]
	w.mu.RUnlock()
	if ok {
		return batcher
	}
	batcher = w.broker.batcher(w.names.workflowSubject(workflow))
	w.mu.Lock()
	w.workflows[workflow] = batcher
	w.mu.Unlock()
	return batcher
}

func (b *EmbeddedBroker) writer(topic TopicRef) *topicWriter {
	names := topicNames(topic)
	b.mu.Lock()
	w, ok := b.writers[names.stream]
	b.mu.Unlock()
	if ok {
		return w
	}
	w = &topicWriter{broker: b, names: names, broadcast: b.batcher(names.broadcastSubject()), workflows: map[string]*topicBatcher{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	if existing, ok := b.writers[names.stream]; ok {
		return existing
	}
	b.writers[names.stream] = w
	return w
}

// ensureRoutedSubjects adds the workflow subjects to a stream created before records were routed by
// workflow, once per topic and process, so a Publish that arrives before the topic is ensured again
// still finds a stream for every subject.
func (b *EmbeddedBroker) ensureRoutedSubjects(ctx context.Context, topic TopicRef, w *topicWriter) error {
	stream, err := b.js.Stream(ctx, w.names.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no stream for topic %s (topic not ensured?): %w", topic.ID, err)
	}
	if err != nil {
		return err
	}
	cfg := stream.CachedInfo().Config
	if want := w.names.streamSubjects(); !slices.Equal(cfg.Subjects, want) {
		cfg.Subjects = want
		if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("add workflow subjects to stream %s: %w", w.names.stream, err)
		}
	}
	w.subjectsChecked.Store(true)
	return nil
}

func (b *EmbeddedBroker) batcher(subject string) *topicBatcher {
	b.mu.Lock()
	defer b.mu.Unlock()
	pb, ok := b.batchers[subject]
	if !ok {
		pb = &topicBatcher{broker: b, subject: subject}
		b.batchers[subject] = pb
	}
	return pb
}

// publishBatch is one engine message being filled or written; done closes once the engine acknowledged
// it (err nil) or the write failed.
type publishBatch struct {
	frame []byte
	count int
	done  chan struct{}
	err   error
}

func (p *publishBatch) finish(err error) {
	p.err = err
	close(p.done)
}

// topicBatcher fills the batches of one subject of a topic. It batches adaptively: a record is written at once when the
// topic has no write in flight, and otherwise joins the open batch, which is written when the write in
// flight is acknowledged or when the batch is full. So an idle topic adds no delay, and under load batches
// grow with the engine's write latency (fsync included) up to BatchRecords or BatchBytes. Writes leave in
// the order the batches were sealed, so records keep their publish order in the stream.
//
// Batching per subject rather than per partition: JetStream writes (and fsyncs) one stream's messages one
// after another, so per-partition batches of one subject would only queue behind each other, smaller.
type topicBatcher struct {
	broker  *EmbeddedBroker
	subject string

	mu       sync.Mutex
	open     *publishBatch
	inFlight int // batches of this topic written and not yet acknowledged
}

func (pb *topicBatcher) add(r *Record, flags byte) (*publishBatch, error) {
	opts := &pb.broker.opts
	size := encodedRecordSize(r)
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.open != nil && len(pb.open.frame)+size > opts.BatchBytes {
		if err := pb.writeLocked(); err != nil {
			return nil, err
		}
	}
	if pb.open == nil {
		pb.open = &publishBatch{
			frame: newBatchFrame(batchFrameHeaderSize + 4*size), // grows by append under load
			done:  make(chan struct{}),
		}
	}
	batch := pb.open
	batch.frame = appendRecord(batch.frame, r, flags)
	batch.count++
	if pb.inFlight == 0 || batch.count >= opts.BatchRecords || len(batch.frame) >= opts.BatchBytes {
		if err := pb.writeLocked(); err != nil {
			return nil, err
		}
	}
	return batch, nil
}

// writeLocked seals the open batch and hands it to the engine. It blocks while InFlightWrites batches are
// unacknowledged across the broker; holding the lock meanwhile keeps this topic's batches in order and
// pushes back on its publishers.
func (pb *topicBatcher) writeLocked() error {
	batch := pb.open
	pb.open = nil
	sealBatchFrame(batch.frame, batch.count)
	b := pb.broker
	select {
	case b.writeSlots <- struct{}{}:
	case <-b.closed:
		batch.finish(ErrClosed)
		return ErrClosed
	}
	future, err := b.js.PublishMsgAsync(&nats.Msg{Subject: pb.subject, Data: batch.frame})
	if err != nil {
		<-b.writeSlots
		err = fmt.Errorf("write batch to %s: %w", pb.subject, err)
		batch.finish(err)
		return err
	}
	pb.inFlight++
	go pb.awaitWrite(future, batch)
	return nil
}

func (pb *topicBatcher) awaitWrite(future jetstream.PubAckFuture, batch *publishBatch) {
	b := pb.broker
	select {
	case <-future.Ok():
		batch.finish(nil)
	case err := <-future.Err():
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			err = fmt.Errorf("no stream holds %s (topic not ensured?): %w", pb.subject, err)
		} else {
			err = fmt.Errorf("write batch to %s: %w", pb.subject, err)
		}
		batch.finish(err)
	case <-b.closed:
		batch.finish(ErrClosed)
	}
	<-b.writeSlots
	pb.mu.Lock()
	defer pb.mu.Unlock()
	pb.inFlight--
	if pb.inFlight == 0 && pb.open != nil && !b.isClosed() {
		// An error here reaches the batch's waiters through finish.
		_ = pb.writeLocked()
	}
}
